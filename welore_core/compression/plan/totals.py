"""From per-layer ranks to a plan's numbers: LRC flags, relative errors, parameters, bytes and the totals.

One home for this arithmetic, for one plan (`plan.plan_from_ranks`: one row) or for every point of a sweep at
once (`grid.plan_grid`: a row per point), so a grid point is the plan to the last bit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..spectra.compute import Spectra
from .budget import BYTES, pct_removed


@dataclass(frozen=True)
class PlanTotals:
    """What a plan adds up to: achieved ERR, the LRC partition, parameters and bytes (the rank map's `totals`)."""

    achieved_err: float  # percent: 1 - sum of kept ranks / sum of full ranks
    layers: int
    lrc: int  # layers reduced by more than min_ratio: factored and fine-tuned
    nlrc: int
    params_dense: int  # parameters of the whole dense model
    params_compressed: int  # LRCs factored, N-LRCs dense (the paper's fine-tuning set-up)
    params_all_layers: int  # every layer at its rank where that is smaller (the paper's compression tables)
    param_ratio: float  # params_compressed / params_dense
    trainable_params: int  # parameters of the LRC factors: what WeLore fine-tunes
    bytes_dense: dict[str, int]  # by storage dtype (budget.BYTES)
    bytes_compressed: dict[str, int]
    mean_rel_error: float  # mean over layers of ||W - W_r||_F / ||W||_F
    params_removed_pct: float = 0.0  # percent of the analysed layers' parameters removed, every layer the smaller way

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RankTable:
    """The per-layer constants a plan's numbers come from, as arrays: the one home of the arithmetic from ranks to
    LRC flags, errors and totals, for one plan (a row) or many at once (`grid.plan_grid`: a row per point)."""

    full: np.ndarray  # (L,) full ranks
    unit: np.ndarray  # (L,) out + in: parameters per unit of rank
    bias: np.ndarray  # (L,) out when the layer has a bias, else 0
    dense: np.ndarray  # (L,) dense parameters
    tails: list[np.ndarray]  # per layer, dropped energy share at each rank (Scores.tail)
    total_params: int  # of the whole dense model

    @staticmethod
    def of(spectra: Spectra, tails: list[np.ndarray]) -> "RankTable":
        layers = spectra.layers
        return RankTable(np.array([l.full_rank for l in layers], dtype=np.int64),
                         np.array([l.shape[0] + l.shape[1] for l in layers], dtype=np.int64),
                         np.array([l.shape[0] if l.bias else 0 for l in layers], dtype=np.int64),
                         np.array([l.dense_params for l in layers], dtype=np.int64), tails, spectra.total_params)

    def per_layer(self, ranks: np.ndarray, min_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Reduction, LRC flag, factored parameters and relative error of every layer of every row of `ranks`
        (P, L): reduction = 1 - r / full; LRC when reduction > min_ratio; error sqrt(dropped energy share)."""
        reduction = 1.0 - ranks / self.full  # (P, L)
        factored = ranks * self.unit + self.bias  # (P, L)
        errors = np.empty(ranks.shape)
        for j, tail in enumerate(self.tails):
            errors[:, j] = np.sqrt(np.maximum(tail[ranks[:, j]], 0.0))
        return reduction, reduction > min_ratio, factored, errors

    def totals(self, ranks: np.ndarray, lrc: np.ndarray, factored: np.ndarray, errors: np.ndarray) -> list[PlanTotals]:
        """PlanTotals of every row of `ranks` (P, L), from `per_layer`'s LRC flags, factored sizes and errors."""
        full, total_params = int(self.full.sum()), self.total_params
        kept = ranks.sum(axis=1)
        saved = np.where(lrc, self.dense - factored, 0).sum(axis=1)  # LRCs factored, N-LRCs dense
        all_saved = np.maximum(0, self.dense - factored).sum(axis=1)
        trainable = np.where(lrc, factored, 0).sum(axis=1)
        smaller = np.minimum(self.dense, factored).sum(axis=1)
        mean_error = errors.mean(axis=1) if ranks.shape[1] else np.zeros(len(ranks))
        n_lrc = lrc.sum(axis=1)
        dense_layers = int(self.dense.sum())
        out = []
        for p in range(len(ranks)):
            compressed = total_params - int(saved[p])
            out.append(PlanTotals(
                achieved_err=round(100.0 * (1.0 - int(kept[p]) / full), 9) if full else 0.0,
                layers=ranks.shape[1], lrc=int(n_lrc[p]), nlrc=ranks.shape[1] - int(n_lrc[p]),
                params_dense=total_params, params_compressed=compressed,
                params_all_layers=total_params - int(all_saved[p]),
                param_ratio=compressed / total_params if total_params else 1.0, trainable_params=int(trainable[p]),
                bytes_dense={d: total_params * b for d, b in BYTES.items()},
                bytes_compressed={d: compressed * b for d, b in BYTES.items()},
                mean_rel_error=float(mean_error[p]), params_removed_pct=pct_removed(dense_layers, int(smaller[p]))))
        return out
