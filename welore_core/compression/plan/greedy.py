"""Greedy rank allocation: spend the budget where each parameter (or rank) buys the most loss reduction.

The loss of a layer at rank r is the share of its energy the truncation drops, w_l · Σ_{i>r} s_i² / Σ s_i²:
with weight spectra the relative Frobenius error of W; with whitened spectra (σ of W·L, XᵀX = L Lᵀ from
ActSVD's calibration) the relative error of the layer's *output*, the quantity SVD-LLM's truncation
minimises. w_l weights a layer by its measured sensitivity (`sensitivity_weights`), 1 by default.

Every layer keeps rank 1; then the increments r -> r+1 of all layers are taken in order of gain per cost
(cost m + n parameters under a parameter budget, 1 under a rank (ERR) budget) while they fit. A layer's gains
fall with r, so this order never skips a rank within a layer, and when every increment costs the same the
result is optimal (the separable concave knapsack); otherwise it is within one increment of the optimum.
Beyond the rank where A·B stops saving parameters a layer may go dense whole, as one more increment.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import WeLoreError
from ...models import LayerInfo
from .threshold import energy_share


def greedy_ranks(layers: list[LayerInfo], values: dict[str, np.ndarray], pct: float | None = None,
                 err: float | None = None, weights: dict[str, float] | None = None,
                 relative: bool = True) -> np.ndarray:
    """Ranks of `layers` meeting a parameter budget (`pct` percent removed) or an ERR (`err` percent).
    `relative=False` spends on the dropped energy itself, w_l · Σ_{i>r} s_i² (values already on one scale,
    as the Fisher-weighted spectra are), instead of its share of the layer's energy."""
    if (pct is None) == (err is None):
        raise WeLoreError("greedy allocation needs exactly one budget: parameters removed or ERR")
    if err is not None:
        return greedy_err_ranks(layers, values, [err], weights, relative)[0]
    items: list[tuple[float, int, int, int, int]] = []  # (-gain/cost, layer, rank after, cost, tie order)
    ranks = np.ones(len(layers), dtype=int)
    tops = np.array([l.full_rank for l in layers])
    spent = 0
    for i, layer in enumerate(layers):
        gain = (weights or {}).get(layer.name, 1.0) * energy_share(values[layer.name], relative)  # loss removed by r
        unit = layer.shape[0] + layer.shape[1]  # parameters of one more rank of A·B
        spent += layer.factored_params(1)
        # factored ranks that still save parameters (r (m + n) < m n), then one step to dense
        top = tops[i] = min(layer.full_rank, max(1, (layer.shape[0] * layer.shape[1] - 1) // unit))
        for r in range(2, top + 1):
            items.append((-gain[r - 1] / unit, i, r, unit, r))
        jump = layer.dense_params - layer.factored_params(top)
        if top < layer.full_rank and jump > 0:  # (a tiny layer may have nothing to jump over)
            ratio = min(float(gain[top:].sum()) / jump, gain[top - 1] / unit if top > 1 else np.inf)
            items.append((-ratio, i, layer.full_rank, jump, layer.full_rank))
    budget = (1.0 - pct / 100.0) * sum(l.dense_params for l in layers)  # type: ignore[operator]
    for _, i, rank, cost, _ in sorted(items):
        step = rank == ranks[i] + 1 and rank <= tops[i]
        to_dense = rank == layers[i].full_rank > tops[i] == ranks[i]  # only once the factored ranks are all in
        if (step or to_dense) and spent + cost <= budget:
            ranks[i] = rank
            spent += cost
    return ranks


def greedy_err_ranks(layers: list[LayerInfo], values: dict[str, np.ndarray], errs: Sequence[float],
                     weights: dict[str, float] | None = None, relative: bool = True) -> np.ndarray:
    """Greedy ranks under each ERR budget of `errs` (percent): (len(errs), L), from one sort.

    Under a rank budget every increment costs 1, so the allocation at a budget of B kept ranks is the first
    B - L increments in order of gain (each layer starts at rank 1): a layer's gains fall with r, and ties are
    broken by (layer, r), so a layer's increments come in rank order and none is ever skipped. Every budget is
    a prefix of the same order.
    """
    if not layers:
        return np.ones((len(errs), 0), dtype=int)
    gains, owner, rank = [], [], []
    for i, layer in enumerate(layers):
        share = energy_share(values[layer.name], relative)[1:layer.full_rank]  # keeping value r: rank r + 1
        gains.append((weights or {}).get(layer.name, 1.0) * share)
        owner.append(np.full(gains[-1].size, i))
        rank.append(np.arange(2, gains[-1].size + 2))
    gain, who, r = np.concatenate(gains), np.concatenate(owner), np.concatenate(rank)
    order = np.lexsort((r, who, -gain))  # by falling gain, then layer, then rank
    full = sum(l.full_rank for l in layers)
    taken = [int(min(max(np.floor((1.0 - err / 100.0) * full) - len(layers), 0), order.size)) for err in errs]
    out = np.ones((len(errs), len(layers)), dtype=int)
    counts, done = np.zeros(len(layers), dtype=int), 0
    for p in np.argsort(taken, kind="stable"):  # budgets in rising order: each adds the next stretch of the order
        counts += np.bincount(who[order[done:taken[p]]], minlength=len(layers))
        done = taken[p]
        out[p] += counts
    return out


def truncation_loss(layers: list[LayerInfo], values: dict[str, np.ndarray], ranks: np.ndarray | list[int],
                    weights: dict[str, float] | None = None, relative: bool = True) -> float:
    """Σ_l w_l · Σ_{i>r_l} s_i² / Σ s_i² (without the division when not `relative`): what the greedy allocation
    minimises (for tests and reports)."""
    total = 0.0
    for layer, r in zip(layers, ranks):
        total += (weights or {}).get(layer.name, 1.0) * float(energy_share(values[layer.name], relative)[int(r):].sum())
    return total


def sensitivity_weights(rows: list[dict[str, object]], layers: list[LayerInfo]) -> dict[str, float]:
    """Per-layer weights from a sensitivity scan's rows (`evaluation.sensitivity_scan`): PPL increase - 1 of the
    layer's own row (by layer) or of its type's row (by type), floored at a small positive value."""
    by_group = {str(r["group"]): max(float(r["ppl_increase"]) - 1.0, 1e-3) for r in rows}  # type: ignore[arg-type]
    return {l.name: by_group.get(l.name, by_group.get(l.kind, 1.0)) for l in layers}
