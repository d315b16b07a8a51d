"""Solving k for a target ERR on 7B-scale spectra: exact solve vs the paper's linear search, one process.

Spectra shaped like LLaMA-2 7B (32 blocks x 7 projections, 4096 values each: 917,504 pooled values),
with heavy and light tails drawn at random. Baseline: the paper's search (k = 0, 0.005, ..., counting
sum(S_l < k) over all layers at every step). This core: normalise + sort once, then each solve is a
binary search; a whole plan (ranks, errors, totals) per slider move.

    .venv/bin/python bench/bench_threshold.py
"""
from __future__ import annotations

import time

import numpy as np

import welore_core as wc
from welore_core.compression.plan import normalize, paper_threshold, solve_threshold

KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
SHAPES = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008)]


def llama7b_like(seed: int = 0) -> wc.Spectra:
    rng = np.random.default_rng(seed)
    layers, values = [], {}
    for block in range(32):
        for kind, shape in zip(KINDS, SHAPES):
            layer = wc.LayerInfo(f"model.layers.{block}.{kind}", block, kind, shape, bias=False)
            x = np.linspace(0, 1, 4096)
            s = np.exp(-rng.uniform(1, 12) * x) + rng.uniform(0.01, 0.3) * (1 - x) + rng.uniform(0, 1e-3, 4096)
            values[layer.name] = np.sort(s)[::-1].astype(np.float32)
            layers.append(layer)
    return wc.Spectra("llama-2-7b-like", "0" * 64, wc.SpectraConfig(), layers, values, 6_738_415_616)


def timed(fn, repeats: int = 5) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    spectra = llama7b_like()
    n = sum(v.size for v in spectra.values.values())
    per_layer = [np.sort(normalize(spectra.values[l.name])) for l in spectra.layers]
    print(f"{len(spectra.layers)} layers, {n:,} pooled singular values")
    scores = wc.prepare_scores(spectra)
    print(f"{'ERR %':>5s} {'paper search':>12s} {'exact solve':>11s} {'ratio':>7s} {'prepare+plan':>12s} {'ratio':>6s} "
          f"{'plan/slider move':>16s} {'ratio':>6s} {'paper ERR %':>11s} {'exact ERR %':>11s}")
    for err in (10.0, 30.0, 50.0, 70.0, 90.0):
        t_paper, k_paper = timed(lambda err=err: paper_threshold(per_layer, err / 100), repeats=2)
        t_solve, _ = timed(lambda err=err: solve_threshold(scores.pooled, err / 100), repeats=50)
        t_cold, plan = timed(lambda err=err: wc.make_plan(spectra, wc.PlanConfig(err=err)), repeats=3)
        t_warm, _ = timed(lambda err=err: wc.make_plan(spectra, wc.PlanConfig(err=err), scores), repeats=20)
        paper_err = wc.make_plan(spectra, wc.PlanConfig(err=None, k=float(k_paper))).achieved_err  # type: ignore[arg-type]
        print(f"{err:5.0f} {1e3 * t_paper:10.1f}ms {1e6 * t_solve:9.1f}us {t_paper / t_solve:6.0f}x "
              f"{1e3 * t_cold:10.1f}ms {t_paper / t_cold:5.1f}x {1e3 * t_warm:14.2f}ms {t_paper / t_warm:5.0f}x "
              f"{paper_err:11.3f} {plan.achieved_err:11.3f}")  # type: ignore[union-attr]
    print("paper search = eq. 1 re-counted at k = 0, 0.005, ...; exact solve = binary search on the sorted pool;")
    print("prepare+plan = normalise, sort and plan from scratch; plan/slider move = full plan from prepared scores")


if __name__ == "__main__":
    main()
