"""Plans along one axis: a strategy's ranks and totals at every point of an ERR or a k grid, in one pass.

The dashboard's explorer moves its sliders over these points in the browser, with no round trip to the server
(a slider move is then a redraw, not a rerun): 199 ERR targets (0-99 % in steps of 0.5) or 201 thresholds (0-1
in the paper's search step, 0.005), each a row of L small integers and one PlanTotals. Every point is the plan
`make_plan` returns for that target: the same allocation (`allocate_ranks`; the greedy strategies' ERR budgets
as prefixes of one sort, `greedy_err_ranks`) and the same arithmetic from ranks to totals (`RankTable`), applied
to all points at once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ...errors import WeLoreError
from ..spectra.compute import Spectra
from .allocate import (GREEDY, THRESHOLD, PlanConfig, Scores, allocate_ranks, check_basis, energy_tails, scores_for,
                       threshold_of)
from .greedy import greedy_err_ranks
from .threshold import ranks_at
from .totals import PlanTotals, RankTable

ERR_GRID = tuple(i / 2 for i in range(199))  # 0, 0.5, ..., 99 %: the ERR slider's steps
K_GRID = tuple(i / 200 for i in range(201))  # 0, 0.005, ..., 1: the paper's linear-search step for k
AXES = ("err", "k")


@dataclass(frozen=True)
class PlanGrid:
    """The plans of one strategy at each target of one axis (row p of every array is target p)."""

    axis: str  # "err" (percent) or "k" (the strategy's threshold)
    targets: tuple[float, ...]  # (P,)
    k: tuple[float | None, ...]  # (P,) the threshold each point planned with (None: greedy has none)
    ranks: np.ndarray  # (P, L) kept ranks, layers in the spectra's order
    lrc: np.ndarray  # (P, L) reduced by more than min_ratio: factored and fine-tuned
    totals: tuple[PlanTotals, ...]  # (P,)

    def nearest(self, value: float) -> int:
        """The index of the target closest to `value` (ties: the lower)."""
        return int(np.argmin(np.abs(np.asarray(self.targets) - value)))


def plan_grid(spectra: Spectra, config: PlanConfig, axis: str = "err", targets: Sequence[float] | None = None,
              scores: Scores | None = None, weights: dict[str, float] | None = None) -> PlanGrid:
    """The plans `config` (its strategy, normalisation, LRC ratio and search) makes at each of `targets` on
    `axis` (default: ERR_GRID or K_GRID), as one PlanGrid. Point p equals
    `make_plan(spectra, replace(config, <axis>=targets[p]), scores, weights)` in ranks, LRC flags, k and totals."""
    if axis not in AXES:
        raise WeLoreError(f"a plan grid's axis must be one of {AXES}, got {axis!r}")
    if axis == "k" and config.strategy in GREEDY:
        raise WeLoreError(f"the {config.strategy} strategy has no threshold k to plan over: use the ERR axis")
    check_basis(spectra, config.strategy)
    points = tuple(float(t) for t in (targets if targets is not None else ERR_GRID if axis == "err" else K_GRID))
    if not points:
        raise WeLoreError("a plan grid needs at least one target")
    configs = [_at(config, axis, t) for t in points]  # each validated as make_plan's would be
    if config.strategy in GREEDY:
        ranks = np.clip(greedy_err_ranks(spectra.layers, spectra.values, points, weights,
                                         relative=config.strategy == "greedy"),
                        1, [l.full_rank for l in spectra.layers])
        ks: list[float | None] = [None] * len(points)
        tails = energy_tails(spectra)
    else:
        scores = scores_for(spectra, config, scores)
        full = [l.full_rank for l in spectra.layers]
        if config.strategy in THRESHOLD:  # k solved per point, then every layer's ranks at all k in one search
            solved = [threshold_of(spectra, c, scores) for c in configs]
            ranks = np.clip(ranks_at(scores.ascending, np.array(solved), config.strategy), 1, full)
            ks = [float(k) for k in solved]
        else:
            rows = [allocate_ranks(spectra, c, scores, weights) for c in configs]
            ranks = np.array([r for r, _ in rows], dtype=np.int64).reshape(len(points), len(full))
            ks = [k for _, k in rows]
        tails = scores.tail
    table = RankTable.of(spectra, tails)
    _, lrc, factored, errors = table.per_layer(ranks, config.min_ratio)
    return PlanGrid(axis, points, tuple(ks), ranks, lrc, tuple(table.totals(ranks, lrc, factored, errors)))


def _at(config: PlanConfig, axis: str, value: float) -> PlanConfig:
    """`config` with `value` as its one target, on `axis`."""
    others = {n: None for n in ("err", "k", "params", "size_mib") if n != axis}
    return replace(config, **others, **{axis: value})
