"""The `welore` CLI contract: --json as the last stdout line, rank maps written, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run

ROOT = Path(__file__).resolve().parent.parent


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
    (["plan", "{model}"], "plan needs --err PCT, --k K, --params PCT or --size MiB"),
    (["plan", "{model}", "--err", "120"], "err is a percentage in [0, 100), got 120.0"),
    (["plan", "{model}", "--err", "20", "--k", "0.2"], "exactly one of err, k, params and size_mib"),
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


@pytest.mark.slow  # a fresh Python process
def test_python_dash_m_entry_point(llama_dir: Path, isolated_cache: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "welore_core", "plan", str(llama_dir), "--err", "25", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "WELORE_CACHE": str(isolated_cache)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["target_err"] == 25.0


def test_compress_then_eval_the_compressed_folder(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rankmap = tmp_path / "rm.json"
    assert run(capsys, "plan", str(lm_dir), "--err", "60", "-o", str(rankmap))[0] == 0
    out = tmp_path / "compressed"
    code, stdout, _ = run(capsys, "compress", str(lm_dir), "--rankmap", str(rankmap), "-o", str(out), "--json")
    assert code == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["mode"] == "lrc" and report["factored"] and report["params_after"] < report["params_before"]
    assert (out / "welore-manifest.json").is_file() and (out / "tokenizer.json").is_file()
    code, stdout, _ = run(capsys, "eval", str(out), "--data", str(corpus_file), "--seqlen", "64", "--tokens", "1024",
                          "--json")
    result = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and set(result) >= {"ppl", "nll", "tokens", "seconds", "tokens_per_s", "dataset", "seqlen"}
    assert result["tokens"] == 1024 and result["seqlen"] == 64 and result["dataset"] == str(corpus_file)
    # all-layers mode from a fresh plan, then ActSVD
    code, stdout, _ = run(capsys, "compress", str(lm_dir), "--err", "40", "--all-layers", "-o", str(tmp_path / "all"),
                          "--json")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["mode"] == "all"
    code, stdout, _ = run(capsys, "compress", str(lm_dir), "--err", "60", "--act-svd", "--calib", str(corpus_file),
                          "--calib-seqlen", "32", "-o", str(tmp_path / "act"), "--json")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["act_svd"] is True


def test_sweep_and_sensitivity_write_their_reports(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    code, stdout, _ = run(capsys, "sweep", str(lm_dir), "--errs", "20,50", "--strategies", "welore,uniform", "--data",
                          str(corpus_file), "--seqlen", "64", "--tokens", "512", "-o", str(out), "--json")
    assert code == 0 and len(json.loads(stdout.strip().splitlines()[-1])["rows"]) == 5
    assert (out / "sweep.csv").is_file() and (out / "sweep.html").is_file() and (out / "sweep.json").is_file()
    code, stdout, _ = run(capsys, "sensitivity", str(lm_dir), "--data", str(corpus_file), "--seqlen", "64", "--tokens",
                          "256", "-o", str(tmp_path / "sens"), "--json")
    assert code == 0 and len(json.loads(stdout.strip().splitlines()[-1])["rows"]) == 7
    assert (tmp_path / "sens" / "sensitivity.html").is_file()


@pytest.mark.parametrize("argv, message", [
    (["eval", "{model}", "--data", "nothing.txt"], "data 'nothing.txt': no such file, and not one of wikitext2, c4"),
    (["eval", "{model}", "--data", "{corpus}", "--seqlen", "100000"], "longer than the model's 64 positions"),
    (["compress", "{model}", "-o", "/tmp/x"], "exactly one of --rankmap FILE, --err PCT, --params PCT or --size MiB"),
    (["compress", "{model}", "--err", "30", "--act-svd", "-o", "/tmp/x"], "--act-svd needs --calib"),
    (["sweep", "{model}", "--errs", "ten", "--data", "{corpus}"], "--errs must be comma-separated"),
])
def test_eval_and_compress_errors(argv: list[str], message: str, lm_dir: Path, corpus_file: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{model}", str(lm_dir)).replace("{corpus}", str(corpus_file)) for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith("welore: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["eval", "{model}", "--data", "{corpus}", "--seqlen", "100", "--tokens", "200", "--device", "nosuch"],
     "eval device must be auto, cpu, cuda[:N] or mps"),
    (["eval", "{model}", "--data", "{corpus}", "--seqlen", "1000"], "longer than the model's 64 positions"),
    (["compress", "{model}", "--err", "60", "--act-svd", "--calib", "{corpus}", "--calib-seqlen", "0", "-o", "{tmp}/a"],
     "calibration seqlen must be at least 2"),
    (["compress", "{model}", "--err", "60", "--act-svd", "--calib", "/no/file", "--calib-seqlen", "32", "-o", "{tmp}/b"],
     "no such file"),
    (["compress", "{model}", "--err", "60", "-o", "{model}"], "exists and is not a compressed model folder"),
])
def test_more_user_errors_are_one_line(argv: list[str], message: str, lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{model}", str(lm_dir)).replace("{corpus}", str(corpus_file)).replace("{tmp}", str(tmp_path))
            for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and err.strip().splitlines()[-1].startswith("welore: error: ")
    assert "Traceback" not in err


def test_compress_needs_no_tokenizer_without_act_svd(llama_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "compress", str(llama_dir), "--err", "60", "-o", str(tmp_path / "c"))
    assert code == 0, err


def test_prepare_leaves_the_spectra_cached(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "prepare", str(llama_dir), "--json")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["spectra"]["layers"] == 21 and result["spectra"]["from_cache"] == 0
    from welore_core import compute_spectra

    assert compute_spectra(llama_dir).from_cache == 21  # the dashboard's first page opens warm
    code, out, _ = run(capsys, "prepare", str(llama_dir), "--no-spectra", "--json")
    assert code == 0 and "spectra" not in json.loads(out.strip().splitlines()[-1])
