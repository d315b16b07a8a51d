"""The `welore` CLI contract: --json as the last stdout line, rank maps written, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from welore_core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spectra_json_is_the_last_line(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spectra", str(llama_dir), "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["layers"] == 21 and len(result["per_layer"]) == 21 and result["from_cache"] == 0
    assert [r["kind"] for r in result["by_type"]][:2] == ["self_attn.q_proj", "self_attn.k_proj"]
    code, out, _ = run(capsys, "spectra", str(llama_dir), "--layers")
    assert code == 0 and "self_attn.q_proj" in out and "model.layers.2.mlp.down_proj" in out


def test_plan_writes_a_rank_map_and_prints_a_summary(llama_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "rm.json"
    code, out, _ = run(capsys, "plan", str(llama_dir), "--err", "30", "-o", str(target))
    assert code == 0 and "achieved ERR" in out and "LRC" in out and "reduction % per block" in out
    saved = json.loads(target.read_text())
    code, out, _ = run(capsys, "plan", str(llama_dir), "--err", "30", "--json")
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["layers"] == saved["layers"] and printed["schema"] == "welore.rankmap/v1"
    code, out, _ = run(capsys, "plan", str(llama_dir), "--k", "0.2", "--strategy", "welore", "--json")
    assert json.loads(out.strip().splitlines()[-1])["k"] == 0.2
    code, out, _ = run(capsys, "validate", str(target), str(llama_dir), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["same_fingerprint"] is True


@pytest.mark.parametrize("argv, message", [
    (["spectra", "/no/such/model"], "no such file or folder"),
    (["plan", "{model}"], "plan needs --err PCT or --k K"),
    (["plan", "{model}", "--err", "120"], "err is a percentage in [0, 100), got 120.0"),
    (["plan", "{model}", "--err", "20", "--k", "0.2"], "exactly one of err and k"),
    (["validate", "/no/such.json", "{model}"], "rank map /no/such.json: cannot read"),
])
def test_errors_are_one_line_and_exit_non_zero(argv: list[str], message: str, llama_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *[a.replace("{model}", str(llama_dir)) for a in argv], "--json")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("welore: error: ") and message in err
    assert json.loads(out.strip().splitlines()[-1]) == {"error": err.strip().removeprefix("welore: error: ")}


def test_not_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "spectra", str(tmp_path / "empty"))
    assert code == 2 and "not a model folder" in err and "Traceback" not in err


def test_python_dash_m_entry_point(llama_dir: Path, isolated_cache: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "welore_core", "plan", str(llama_dir), "--err", "25", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "WELORE_CACHE": str(isolated_cache)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["target_err"] == 25.0
