"""Normalisation and the global threshold k (WeLore step 2, arXiv 2407.11239 eq. 1 and Algorithm 1).

A layer keeps rank r_l = #(normalised s >= k); k is chosen so that the pooled fraction of normalised
singular values below k equals the target Effective Rank Reduction. The paper finds k by a linear
search over 0..1 in steps of 0.005; here it is solved exactly from the pooled sorted values
(`solve_threshold`, O(log N) once sorted), with the linear search kept for reproducing published k.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import WeLoreError

NORMALIZATIONS = ("minmax", "max")


def normalize(s: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Per-layer normalised singular values (same order as `s`), float64.

    minmax: (s - min) / (max - min), as the paper's code; max: s / max. A flat spectrum (max == min,
    e.g. an orthogonal or all-zero matrix) has no tail to cut and normalises to all ones.
    """
    s = np.asarray(s, dtype=np.float64)
    hi, lo = float(s.max()), float(s.min())
    if method == "minmax":
        return (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    if method == "max":
        return s / hi if hi > 0 else np.ones_like(s)
    raise WeLoreError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")


def count_below(sorted_scores: np.ndarray, k: float | np.ndarray) -> Any:
    """How many pooled scores are strictly below k (they are the ones removed); an array for an array of k."""
    n = np.searchsorted(sorted_scores, k, side="left")
    return int(n) if np.ndim(n) == 0 else n


def kept_rank(ascending: np.ndarray, k: float | np.ndarray) -> Any:
    """WeLore's rank rule (eq. 1 of the paper), the one place it is written: the rank a layer keeps at threshold
    k is how many of its scores (normalised singular values, sorted ascending) are >= k; an array for an array
    of k. `ranks_at` applies it to every layer."""
    return ascending.size - count_below(ascending, k)


def ranks_at(ascending: list[np.ndarray], k: float | np.ndarray, strategy: str) -> np.ndarray:
    """Per-layer kept ranks of a threshold strategy at k, clamped to >= 1: (L,) for one k, (P, L) for P of them."""
    ks = np.atleast_1d(np.asarray(k, dtype=np.float64))
    if strategy == "energy":
        columns = [count_below(a, ks) for a in ascending]  # values whose preceding energy is still < k
    else:
        columns = [kept_rank(a, ks) for a in ascending]  # normalised values >= k
    ranks = np.maximum(np.stack(columns, axis=-1) if columns else np.zeros((ks.size, 0), dtype=int), 1)
    return ranks if np.ndim(k) else ranks[0]


def energy_share(s: np.ndarray, relative: bool = True) -> np.ndarray:
    """The energy each singular value carries, s_i² in float64, as a share of the layer's Σ s² when `relative`
    (an all-zero spectrum carries none): what truncating it costs the layer's relative Frobenius error (squared),
    the greedy strategies' gain, and the energy strategy's scores."""
    sq = np.asarray(s, dtype=np.float64) ** 2
    if not relative:
        return sq
    total = float(sq.sum())
    return sq * (1.0 / total) if total > 0 else np.zeros_like(sq)


def solve_threshold(sorted_scores: np.ndarray, err: float) -> float:
    """The threshold whose removed fraction #(score < k) / N is closest to `err` (a fraction in [0, 1)).

    Candidates are the pooled values themselves (a threshold between two values removes the same set as
    the upper one); among equally close candidates the smaller k (more kept) wins. Exact with ties.
    """
    n = sorted_scores.size
    if n == 0:
        raise WeLoreError("cannot solve a threshold over zero singular values")
    if not 0.0 <= err < 1.0:
        raise WeLoreError(f"target ERR must be in [0, 100) percent, got {err * 100:g}")
    target = err * n
    m = min(n - 1, max(0, math.ceil(target - 0.5)))  # nearest count, halves rounded down (toward keeping)
    v = float(sorted_scores[m])
    below = count_below(sorted_scores, v)  # removed if k = v (<= m when values tie)
    above = int(np.searchsorted(sorted_scores, v, side="right"))  # removed if k = next value above v
    if above < n and abs(above - target) < abs(below - target):
        return float(sorted_scores[above])
    return v


def solve_threshold_below(sorted_scores: np.ndarray, err: float) -> float:
    """Mirror of `solve_threshold` for scores kept while *below* k (the energy strategy: a singular value
    is kept while the energy before it is < k). The k in [0, 1] whose removed fraction #(score >= k) / N
    is closest to `err`; among equally close candidates the larger k (more kept) wins.
    """
    n = sorted_scores.size
    if n == 0:
        raise WeLoreError("cannot solve a threshold over zero scores")
    if not 0.0 <= err < 1.0:
        raise WeLoreError(f"target ERR must be in [0, 100) percent, got {err * 100:g}")
    target = n - err * n  # kept count wanted; a threshold k keeps #(score < k) ((1 - err) n rounds differently)
    m = min(n, max(0, math.floor(target + 0.5)))  # nearest count, halves rounded up (toward keeping)
    if m == n:
        return 1.0 if float(sorted_scores[-1]) < 1.0 else float(sorted_scores[-1])
    v = float(sorted_scores[m])
    below = count_below(sorted_scores, v)  # kept if k = v (<= m)
    above = int(np.searchsorted(sorted_scores, v, side="right"))  # kept if k = the next candidate above v
    if abs(above - target) <= abs(below - target):
        return float(sorted_scores[above]) if above < n else (1.0 if v < 1.0 else v)
    return v


def paper_threshold(per_layer: list[np.ndarray], err: float, step: float = 0.005, tol: float = 0.005) -> float:
    """The paper's linear search: k = 0, step, 2*step, ... until the removed fraction is within `tol`
    of `err` (Algorithm 1); if a step jumps over that band, the first k that reaches `err`."""
    total = sum(a.size for a in per_layer)
    for k in np.arange(0.0, 1.0, step):
        frac = sum(int(np.sum(a < k)) for a in per_layer) / total  # eq. 1, recomputed each step
        if abs(frac - err) < tol or frac >= err:
            return round(float(k), 10)
    return 1.0
