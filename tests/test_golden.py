"""Golden CLI outputs: `plan`, `compress` and `eval --tokens` on a tiny seeded model give the JSON recorded
in tests/golden/cli.json (written by the code before the package was restructured).

Integers, strings, booleans and the structure must match exactly; floats (k, errors, perplexities) to a
relative 1e-5, so a different BLAS on another machine does not fail the test while any change in what is
computed does. Run with WELORE_GOLDEN_UPDATE=1 to rewrite the file after an intended change of output.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import char_tokenizer, tiny_llama

from welore_core.cli import main

GOLDEN = Path(__file__).parent / "golden" / "cli.json"
VOLATILE = {"seconds", "tokens_per_s"}  # wall-clock figures: never the same twice


def _corpus(path: Path) -> Path:
    import random

    rng = random.Random(7)
    words = ["the", "king", "speaks", "and", "queen", "answers", "to", "a", "lord", "of", "york", "now", "then"]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) + "." for _ in range(300)))
    return path


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], tmp: Path) -> Any:
    code = main(argv + ["--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return _portable(json.loads(out.strip().splitlines()[-1]), str(tmp))


def _portable(value: Any, tmp: str) -> Any:
    """The output with the test's temporary folder replaced by a placeholder and wall-clock fields dropped."""
    if isinstance(value, dict):
        return {k: _portable(v, tmp) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_portable(v, tmp) for v in value]
    if isinstance(value, str):
        return value.replace(tmp, "<tmp>")
    return value


def _same(got: Any, want: Any, where: str = "") -> list[str]:
    """Every difference between two JSON values (floats within a relative 1e-5)."""
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = [f"{where}: keys {sorted(set(got) ^ set(want))}"] if list(got) != list(want) else []
        return diffs + [d for k in want if k in got for d in _same(got[k], want[k], f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: length {len(got)} != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _same(g, w, f"{where}/{i}")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        ok = math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-9) or (math.isnan(got) and math.isnan(want))
        return [] if ok else [f"{where}: {got!r} != {want!r}"]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} != {want!r}"]


def outputs(tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    model = tmp / "golden-llama"
    tiny_llama(layers=3, seed=11).save_pretrained(model)
    char_tokenizer().save_pretrained(model)
    corpus = _corpus(tmp / "corpus.txt")
    evaluate = ["--data", str(corpus), "--tokens", "640", "--seqlen", "32", "--batch-size", "3"]
    return {
        "plan_err": _run(capsys, ["plan", str(model), "--err", "35"], tmp),
        "plan_k_energy": _run(capsys, ["plan", str(model), "--k", "0.9", "--strategy", "energy"], tmp),
        "compress_lrc": _run(capsys, ["compress", str(model), "--err", "60", "-o", str(tmp / "lrc")], tmp),
        "compress_all": _run(capsys, ["compress", str(model), "--err", "30", "--strategy", "uniform", "--all-layers",
                                      "-o", str(tmp / "all")], tmp),
        "eval_dense": _run(capsys, ["eval", str(model), *evaluate], tmp),
        "eval_lrc": _run(capsys, ["eval", str(tmp / "lrc"), *evaluate], tmp),
        "eval_all": _run(capsys, ["eval", str(tmp / "all"), *evaluate], tmp),
    }


def test_cli_json_outputs_match_the_golden_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = outputs(tmp_path, capsys)
    if os.environ.get("WELORE_GOLDEN_UPDATE") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=False) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert list(got) == list(want)
    for name in want:
        diffs = _same(got[name], want[name], name)
        assert not diffs, "\n".join(diffs[:20])
