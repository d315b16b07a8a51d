"""Data parallel fine-tuning through `accelerate launch` (issue 13): two CPU processes (gloo) train the LRCs of
a tiny compressed model; both end with the same weights, and those are one process's with twice the batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer, tiny_llama

import welore_core as wc

HELPER = Path(__file__).parent / "helpers" / "dp_finetune.py"
# the same rows and the same averaged gradient; only the order of float32 sums differs between one process
# and an all-reduce over two, so the weights agree to float32 rounding, amplified a little over 4 AdamW steps
TOLERANCE = 1e-4


@pytest.mark.slow  # two fresh Python processes with torch and transformers
@pytest.mark.parametrize("distil", [False, True], ids=["lm-loss", "distilled"])
def test_two_processes_match_each_other_and_one_process_with_twice_the_batch(tmp_path: Path, corpus_file: Path,
                                                                           distil: bool) -> None:
    model = tiny_llama()
    teacher = tmp_path / "dense"  # distillation: each process holds its own teacher
    model.save_pretrained(teacher)
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(model), wc.PlanConfig(err=50)))
    folder = wc.save_compressed(model, tmp_path / "compressed", report)
    char_tokenizer().save_pretrained(folder)
    out = tmp_path / "dp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", str(HELPER), str(folder), str(corpus_file),
              str(out), str(tmp_path / "cache-dp")] + ([str(teacher)] if distil else [])
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    trained = [k for k in ranks[0] if k.endswith((".A.weight", ".B.weight"))]
    assert trained and all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # DDP keeps them in step

    single = wc.FinetuneConfig(mode="lrc", data=str(corpus_file), steps=4, seqlen=32, batch_size=4, lr=1e-2,
                               eval_tokens=256, forget_tokens=0, save_every=0, device="cpu", optimizer="loop",
                               distill=distil, teacher=str(teacher) if distil else "")
    wc.run_finetune(folder, single, tmp_path / "single")
    one = wc.load_model(wc.resolve_model(tmp_path / "single")).state_dict()
    for key in trained:
        assert torch.allclose(ranks[0][key], one[key], rtol=TOLERANCE, atol=TOLERANCE), key
    before = wc.load_model(wc.resolve_model(folder)).state_dict()
    assert all(not torch.equal(before[k], one[k]) for k in trained)  # it trained: the comparison means something
