"""Evaluation throughput: this core's perplexity vs the paper's batch-size-1 loop, same windows, one process.

Paper's loop (the SparseGPT/Wanda evaluation WeLore reuses): for each window, `model(x, labels=x).loss`
under no_grad with the KV cache on. This core: batched windows, inference_mode, no KV cache, one
cross-entropy per batch. Both must give the same perplexity.

    .venv/bin/python bench/bench_eval_throughput.py [--windows 8] [--seqlen 1024] [--batch-size 4]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from welore_core.data import load_corpus, tokenize_corpus, windows_of
from welore_core.evaluation import EvalConfig, load_for_eval, perplexity


def paper_loop(model: torch.nn.Module, windows: torch.Tensor) -> tuple[float, float]:
    start = time.perf_counter()
    nlls = []
    with torch.no_grad():
        for w in windows:
            loss = model(w[None], labels=w[None]).loss
            nlls.append(float(loss) * w.numel())
    seconds = time.perf_counter() - start
    return math.exp(sum(nlls) / windows.numel()), seconds


def main(n: int, seqlen: int, batch_size: int, repeats: int = 2) -> None:
    loaded = load_for_eval(None)
    ids = tokenize_corpus(loaded.tokenizer, load_corpus("wikitext2"))
    config = EvalConfig(seqlen=seqlen, tokens=n * seqlen, batch_size=batch_size)
    windows = windows_of(ids, config.seqlen, config.tokens)
    perplexity(loaded.model, ids[: 2 * seqlen], EvalConfig(seqlen=seqlen, batch_size=2))  # warm-up
    t_paper, t_ours = float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, best of `repeats`, so drift hits both alike
        ppl_paper, seconds = paper_loop(loaded.model, windows)
        t_paper = min(t_paper, seconds)
        ours = perplexity(loaded.model, ids, config)
        t_ours = min(t_ours, ours.seconds)
    tokens = windows.numel()
    print(f"SmolLM2-135M-Instruct: {n} windows x {seqlen} tokens, "
          f"CPU threads {torch.get_num_threads()}")
    print(f"{'loop':34s} {'seconds':>8s} {'tokens/s':>9s} {'ratio':>6s} {'PPL':>9s}")
    print(f"{'paper: batch 1, labels=, no_grad':34s} {t_paper:8.2f} {tokens / t_paper:9.0f} {1.0:5.2f}x {ppl_paper:9.4f}")
    print(f"{f'core: batch {batch_size}, inference_mode':34s} {t_ours:8.2f} {tokens / t_ours:9.0f} "
          f"{t_paper / t_ours:5.2f}x {ours.ppl:9.4f}")
    print("(the paper's loss averages seqlen-1 predictions per window and scales by seqlen; both PPLs are the mean"
          " NLL per predicted token, so they agree)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=4)
    a = parser.parse_args()
    main(a.windows, a.seqlen, a.batch_size)
