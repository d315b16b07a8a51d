"""Budgets in parameters and bytes beside ERR, and the rank allocations that meet them.

The peers' convention (SVD-LLM, ASVD, Basis Sharing): "20 % compression" removes 20 % of the parameters of
the factorised linear layers, every matrix stored as A·B at its rank where that is smaller (the paper's
compression tables; `--all-layers`). A size target in MiB is the same budget seen from the whole model:
params removed = total params - size bytes / bytes per parameter.

Every threshold strategy keeps its one global k (WeLore's rule on normalised spectra included): removed
parameters are monotone in k, so k is solved over the pooled scores for the closest achievable budget.
`uniform` under a parameter budget is the peers' uniform rank, r = floor(m n (1 - ratio) / (m + n)).
`greedy` spends the budget where each parameter buys the largest loss reduction (see `greedy_ranks`).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import WeLoreError
from ...models import LayerInfo
from .threshold import ranks_at

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def kept_params(layer: LayerInfo, rank: int) -> int:
    """Parameters of a layer at `rank` stored the smaller way: factored A·B, or dense (rank r in place)."""
    return min(layer.dense_params, layer.factored_params(rank))


def removed_pct(layers: list[LayerInfo], ranks: list[int] | np.ndarray) -> float:
    """Percent of the analysed layers' parameters removed (the peers' convention)."""
    return pct_removed(sum(l.dense_params for l in layers), sum(kept_params(l, int(r)) for l, r in zip(layers, ranks)))


def pct_removed(dense: int, kept: int) -> float:
    """100 (1 - kept / dense): percent of `dense` parameters removed (0 when there are none)."""
    return 100.0 * (1.0 - kept / dense) if dense else 0.0


def size_to_pct(layers: list[LayerInfo], total_params: int, size_mib: float, dtype: str) -> float:
    """The parameter budget (percent of the analysed layers removed) that brings the model to `size_mib`."""
    dense = sum(l.dense_params for l in layers)
    floor = total_params - dense + sum(kept_params(l, 1) for l in layers)  # every layer at rank 1
    wanted = size_mib * 2**20 / BYTES[dtype]
    if not floor <= wanted <= total_params:
        raise WeLoreError(f"size {size_mib:g} MiB is outside what this model can be in {dtype}: "
                          f"{floor * BYTES[dtype] / 2**20:,.1f} to {total_params * BYTES[dtype] / 2**20:,.1f} MiB")
    return 100.0 * (total_params - wanted) / dense


def uniform_param_ranks(layers: list[LayerInfo], ratio: float) -> np.ndarray:
    """The peers' uniform allocation: every matrix keeps (1 - ratio) of its parameters as A·B."""
    if ratio <= 0:
        return np.array([l.full_rank for l in layers])  # nothing to remove: nothing to truncate
    ranks = []
    for l in layers:
        r = max(1, math.floor(l.shape[0] * l.shape[1] * (1.0 - ratio) / (l.shape[0] + l.shape[1])))
        ranks.append(r if l.factored_params(r) < l.dense_params else l.full_rank)  # saves nothing: stay dense
    return np.clip(np.array(ranks), 1, [l.full_rank for l in layers])


def solve_k_for_params(layers: list[LayerInfo], ascending: list[np.ndarray], pooled: np.ndarray, strategy: str,
                       pct: float) -> float:
    """The threshold among the pooled scores whose parameter removal is closest to `pct` (ties: less removed).

    Removal grows with k for threshold rules (fewer values >= k) and shrinks with k for energy (fewer values
    before the energy reaches k), so a binary search over the sorted candidates finds the crossing.
    """
    candidates = np.unique(pooled)
    if candidates.size == 0:
        raise WeLoreError("cannot solve a parameter budget over zero singular values")
    sign = -1.0 if strategy == "energy" else 1.0  # make removal increase along the candidates
    order = candidates[::-1] if sign < 0 else candidates

    def removed(i: int) -> float:
        return removed_pct(layers, ranks_at(ascending, float(order[i]), strategy))

    lo, hi = 0, order.size - 1
    while lo < hi:  # smallest index whose removal reaches pct
        mid = (lo + hi) // 2
        if removed(mid) >= pct:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 0 and abs(removed(lo - 1) - pct) <= abs(removed(lo) - pct):
        best = lo - 1
    return float(order[best])
