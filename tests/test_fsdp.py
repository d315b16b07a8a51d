"""Sharded fine-tuning (issue 27): `--fsdp` under `torchrun --nproc_per_node 2` on gloo, the loop's own
`fully_shard` path GPUs take too. Two sharded processes end where one process with twice the batch ends, each holds
about half of the model and optimizer state, and a run killed after a checkpoint resumes to the same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer, one_line, run, tiny_llama

import welore_core as wc
from welore_core.errors import WeLoreError

HELPER = Path(__file__).parent / "helpers" / "fsdp_finetune.py"
TOLERANCE = 1e-4  # the same rows and averaged gradients; only the order of float32 sums differs
MODES = ("lrc", "nlrc", "full", "lora")


def _folder(tmp_path: Path) -> Path:
    model = tiny_llama(tie=True)  # the embedded model ties its head to the embedding: the gathered output keeps that
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(model), wc.PlanConfig(err=50)))
    folder = wc.save_compressed(model, tmp_path / "compressed", report)
    char_tokenizer().save_pretrained(folder)
    return folder


def _torchrun(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HELPER), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return wc.load_model(wc.resolve_model(folder)).state_dict()


@pytest.mark.slow  # three launches of two fresh Python processes with torch and transformers
def test_two_sharded_processes_match_one_process_with_twice_the_batch_and_resume_after_a_kill(
        tmp_path: Path, corpus_file: Path) -> None:
    folder = _folder(tmp_path)
    out, cut = tmp_path / "fsdp", tmp_path / "killed"
    out.mkdir()
    cut.mkdir()
    _torchrun(str(folder), str(corpus_file), str(out), str(tmp_path / "cache"), ",".join(MODES))
    before = _weights(folder)
    for mode in MODES:
        single = wc.FinetuneConfig(mode=mode, data=str(corpus_file), steps=4, seqlen=32, batch_size=4, lr=1e-2,
                                   eval_tokens=256, forget_tokens=0, save_every=0, device="cpu", optimizer="loop")
        wc.run_finetune(folder, single, tmp_path / f"single-{mode}")
        one, sharded = _weights(tmp_path / f"single-{mode}"), _weights(out / mode)
        changed = [k for k in one if not torch.equal(before[k], one[k])]
        assert changed, mode  # it trained: the comparison means something
        for key in one:
            assert torch.allclose(sharded[key], one[key], rtol=TOLERANCE, atol=TOLERANCE), (mode, key)
        held = [json.loads((out / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]
        assert all(h["sharded"] for h in held), mode
        total = held[0]["params_global"]
        assert sum(h["params_local"] for h in held) == total
        assert all(abs(h["params_local"] - total / 2) <= 0.1 * total for h in held), (mode, held)
        moments = 2 * held[0]["trainable_global"]  # AdamW: exp_avg and exp_avg_sq of every trainable parameter
        assert sum(h["optimizer_local"] for h in held) == moments
        assert all(abs(h["optimizer_local"] - moments / 2) <= 0.15 * moments for h in held), (mode, held)
    record = json.loads((out / "lrc" / "welore-finetune.json").read_text())
    assert record["config"]["fsdp"] is True
    full = wc.load_model(wc.resolve_model(out / "full"))
    assert full.get_output_embeddings().weight is full.get_input_embeddings().weight

    killed = _torchrun(str(folder), str(corpus_file), str(cut), str(tmp_path / "cache"), "lrc", "3", check=False)
    assert killed.returncode != 0 and not (cut / "lrc").exists()
    latest = (cut / "lrc.checkpoints" / "latest").read_text().strip()
    assert latest == "step-000002" and (cut / "lrc.checkpoints" / latest / "sharded").is_dir()
    _torchrun(str(folder), str(corpus_file), str(cut), str(tmp_path / "cache"), "lrc")
    resumed = json.loads((cut / "lrc" / "welore-finetune.json").read_text())
    assert resumed["resumed_from"] == 2
    whole, again = _weights(out / "lrc"), _weights(cut / "lrc")
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit-identical to the uninterrupted run


def test_fsdp_refuses_one_process_galore_and_fp16(tmp_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    folder = _folder(tmp_path)
    code, _, err = run(capsys, "finetune", str(folder), "--mode", "lrc", "--fsdp", "--data", str(corpus_file),
                       "--steps", "2", "--seqlen", "32", "--eval-tokens", "256", "--forget-tokens", "0",
                       "--device", "cpu", "-o", str(tmp_path / "out"))
    assert code == 2 and "single process without a launcher" in one_line(err) and "torchrun" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.checkpoints").exists()
    with pytest.raises(WeLoreError, match="galore cannot run sharded"):
        wc.FinetuneConfig(mode="galore", data=str(corpus_file), fsdp=True, device="cpu")
    with pytest.raises(WeLoreError, match="fp16"):
        wc.FinetuneConfig(mode="lrc", data=str(corpus_file), fsdp=True, device="cpu", mixed_precision="fp16")
