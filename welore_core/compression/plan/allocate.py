"""Rank plans: a pure function from spectra to per-layer ranks (WeLore step 3 and its baselines).

Strategies, each with one global parameter k:
  welore  — k is the normalised singular value threshold; r_l = #(normalised s >= k)  (the paper)
  energy  — k is the spectral energy each layer keeps; r_l = smallest r with sum_{i<r} s_i^2 >= k * sum s^2
  uniform — k is the reduction ratio applied to every layer; r_l = round((1 - k) * full_rank), halves up
Given a target ERR, welore and energy solve k exactly over the pooled scores (see threshold.py);
uniform takes k = ERR (its achieved ERR differs from the target only by per-layer rounding). A
layer whose reduction exceeds `min_ratio` (default 0.5: r_l < 0.5 * full rank) is a Low-Rank
Component (LRC) and is factored as A (out x r) · B (r x in); the others (N-LRCs) stay dense.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from ...errors import WeLoreError
from ..spectra.compute import Spectra
from .budget import BYTES, size_to_pct, solve_k_for_params, uniform_param_ranks
from .greedy import greedy_ranks
from .threshold import (NORMALIZATIONS, energy_share, normalize, paper_threshold, ranks_at, solve_threshold,
                        solve_threshold_below)
from .totals import PlanTotals, RankTable

STRATEGIES = ("welore", "uniform", "energy", "whitened", "greedy", "fisher")
DATA_AWARE = ("whitened", "greedy", "fisher")  # plan on whitened spectra (calibration statistics): whitened.py, fisher.py
CALIBRATED = ("whitened", "fisher")  # cannot plan without calibration statistics (greedy can, on weight spectra)
UNCALIBRATED = tuple(s for s in STRATEGIES if s not in CALIBRATED)  # plan on the weights alone
GREEDY = ("greedy", "fisher")  # no threshold: a budget spent increment by increment (greedy.py)
THRESHOLD = ("welore", "energy")  # one global k on per-layer scores, solved for a target (threshold_of)
LRC_MIN_RATIO = 0.5  # the paper: a layer whose rank drops by more than half is a Low-Rank Component


@dataclass(frozen=True)
class PlanConfig:
    """What to plan: a strategy and one target — an ERR (percent), the strategy's threshold k, parameters
    removed (percent of the analysed layers', the peers' convention) or the model's size in MiB. With none
    given the target is ERR 50 %."""

    strategy: str = "welore"
    err: float | None = None  # target effective rank reduction in percent, [0, 100)
    k: float | None = None  # the strategy's threshold instead of a target
    params: float | None = None  # percent of the analysed layers' parameters removed, every layer the smaller way
    size_mib: float | None = None  # or the whole model's size in MiB, stored in size_dtype
    size_dtype: str = "bfloat16"  # bytes per parameter of size_mib
    normalization: str = "minmax"  # how welore normalises each spectrum: minmax (paper) or max
    min_ratio: float = LRC_MIN_RATIO  # a layer reduced by more than this is an LRC
    search: str = "exact"  # "exact" solve of k, or "paper" linear search in steps of 0.005

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise WeLoreError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        given = [n for n in ("err", "k", "params", "size_mib") if getattr(self, n) is not None]
        if not given:
            object.__setattr__(self, "err", 50.0)
        elif len(given) > 1:
            raise WeLoreError(f"give exactly one of err, k, params and size_mib (got {', '.join(given)})")
        if self.params is not None and not 0.0 <= self.params < 100.0:
            raise WeLoreError(f"params is a percentage of parameters removed in [0, 100), got {self.params!r}")
        if self.size_mib is not None and not self.size_mib > 0:
            raise WeLoreError(f"size_mib must be positive, got {self.size_mib!r}")
        if self.size_dtype not in BYTES:
            raise WeLoreError(f"size_dtype must be one of {', '.join(BYTES)}, got {self.size_dtype!r}")
        if self.strategy in GREEDY and self.k is not None:
            raise WeLoreError(f"the {self.strategy} strategy has no threshold k: give err, params or size_mib")
        if self.search == "paper" and (self.strategy != "welore" or self.err is None):
            raise WeLoreError("the paper's linear search is defined for the welore strategy with a target ERR")
        if self.err is not None and not 0.0 <= self.err < 100.0:
            raise WeLoreError(f"err is a percentage in [0, 100), got {self.err!r}")
        if self.k is not None and not 0.0 <= self.k <= 1.0:
            raise WeLoreError(f"k must be in [0, 1], got {self.k!r}")
        if self.normalization not in NORMALIZATIONS:
            raise WeLoreError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise WeLoreError(f"min_ratio must be in [0, 1], got {self.min_ratio!r}")
        if self.search not in ("exact", "paper"):
            raise WeLoreError(f"search must be 'exact' or 'paper', got {self.search!r}")


@dataclass(frozen=True)
class LayerPlan:
    name: str
    block: int
    kind: str
    shape: tuple[int, int]  # (out, in)
    full_rank: int
    rank: int  # kept rank, >= 1
    reduction: float  # 1 - rank / full_rank
    lrc: bool  # reduction > min_ratio: factored and fine-tuned
    dense_params: int
    factored_params: int  # rank * (out + in) (+ bias)
    rel_error: float  # ||W - W_r||_F / ||W||_F = sqrt(sum of discarded s^2 / sum s^2)


@dataclass
class RankPlan:
    model: str
    fingerprint: str
    config: PlanConfig
    k: float | None  # the strategy's threshold (None for a plan imported with ranks only)
    target_err: float | None  # percent
    layers: list[LayerPlan]
    total_params: int  # parameters of the dense model
    totals: PlanTotals

    @property
    def achieved_err(self) -> float:
        return self.totals.achieved_err

    def ranks(self) -> dict[str, int]:
        """Per-layer ranks keyed by dotted module name (the `rank_pattern` convention of peft)."""
        return {l.name: l.rank for l in self.layers}

    def frame(self) -> pd.DataFrame:
        """One row per layer, one column per LayerPlan field (built column-wise: asdict per layer costs 3x)."""
        df = pd.DataFrame({f.name: [getattr(l, f.name) for l in self.layers] for f in fields(LayerPlan)})
        df["shape"] = [f"{l.shape[0]}x{l.shape[1]}" for l in self.layers]
        return df


@dataclass(frozen=True)
class Scores:
    """Per-layer scores of one strategy, prepared once so that any k or ERR plans in O(L log n)."""

    strategy: str
    normalization: str
    ascending: list[np.ndarray]  # per layer, scores sorted ascending (for searchsorted); energy: energy before i
    pooled: np.ndarray  # all scores sorted ascending
    tail: list[np.ndarray]  # per layer, sum_{i>=r} s_i^2 / sum s^2 for r = 0..n (last is 0)


def energy_tail(s: np.ndarray) -> np.ndarray:
    """The share of a layer's energy dropped at each rank r = 0..n: Σ_{i>=r} s_i² / Σ s² (the last is 0); its
    square root is the relative Frobenius error of the rank-r truncation."""
    sq = energy_share(s, relative=False)
    total = sq.sum()
    return np.append(np.cumsum(sq[::-1])[::-1], 0.0) / total if total > 0 else np.zeros(sq.size + 1)


def prepare_scores(spectra: Spectra, strategy: str = "welore", normalization: str = "minmax") -> Scores:
    ascending = []
    for layer in spectra.layers:
        s = spectra.values[layer.name].astype(np.float64)
        if strategy == "energy":
            # energy held by the values before index i (forward sums, so k round-trips exactly); kept while < k
            sq = energy_share(s, relative=False)
            total = sq.sum()
            score = np.concatenate(([0.0], np.cumsum(sq)[:-1])) / total if total > 0 else np.zeros(s.size)
        else:
            score = normalize(s, normalization)
        ascending.append(np.sort(score))
    pooled = np.sort(np.concatenate(ascending)) if strategy != "uniform" else np.empty(0)
    return Scores(strategy, normalization, ascending, pooled, energy_tails(spectra))


def energy_tails(spectra: Spectra) -> list[np.ndarray]:
    """`energy_tail` of every layer of `spectra`, in its order."""
    return [energy_tail(spectra.values[l.name]) for l in spectra.layers]


def make_plan(spectra: Spectra, config: PlanConfig, scores: Scores | None = None,
              weights: dict[str, float] | None = None) -> RankPlan:
    """Allocate ranks to every layer of `spectra` according to `config` (`weights`: per-layer sensitivity
    weights for the greedy strategy, `greedy.sensitivity_weights`)."""
    scores = scores_for(spectra, config, scores) if config.strategy not in GREEDY else None
    ranks, k = allocate_ranks(spectra, config, scores, weights)
    return plan_from_ranks(spectra, dict(zip([l.name for l in spectra.layers], ranks.tolist())), config, k=k,
                           scores=scores)


def allocate_ranks(spectra: Spectra, config: PlanConfig, scores: Scores | None = None,
                   weights: dict[str, float] | None = None) -> tuple[np.ndarray, float | None]:
    """The kept rank of every layer (clamped to [1, full rank]) and the strategy's threshold k (None for the
    greedy strategies): make_plan's allocation, without the plan around it (`sweep` calls it point by point)."""
    check_basis(spectra, config.strategy)
    layers = spectra.layers
    full = np.array([l.full_rank for l in layers])
    pct = params_target(spectra, config)
    k: float | None
    if config.strategy in GREEDY:  # fisher: the dropped energy on the loss's scale, not each layer's share
        ranks, k = greedy_ranks(layers, spectra.values, pct=pct, err=None if pct is not None else config.err,
                                weights=weights, relative=config.strategy == "greedy"), None
    else:
        scores = scores_for(spectra, config, scores)
        target = None if config.err is None else config.err / 100.0
        if config.strategy == "uniform":
            if pct is not None:  # the peers' uniform: every matrix keeps (1 - ratio) of its parameters
                k = pct / 100.0
                ranks = uniform_param_ranks(layers, k)
            else:
                k = target if config.k is None else config.k
                ranks = np.floor((1.0 - k) * full + 0.5).astype(int)  # type: ignore[operator]
        else:
            k = threshold_of(spectra, config, scores)
            ranks = ranks_at(scores.ascending, k, config.strategy)
    return np.clip(ranks, 1, full), None if k is None else float(k)


def scores_for(spectra: Spectra, config: PlanConfig, scores: Scores | None) -> Scores:
    """`scores` when they are `config`'s strategy and normalisation, else those prepared afresh."""
    if scores is None or (scores.strategy, scores.normalization) != (config.strategy, config.normalization):
        return prepare_scores(spectra, config.strategy, config.normalization)
    return scores


def check_basis(spectra: Spectra, strategy: str) -> None:
    """Refuse a data-aware strategy on spectra that are not its kind (plain weight spectra, say)."""
    if strategy == "whitened" and spectra.basis not in ("whitened", "fisher"):
        raise WeLoreError("the whitened strategy plans on whitened spectra: whitened_spectra(model, collect_grams(…))"
                          " (the CLI's --calib PATH)")
    if strategy == "fisher" and spectra.basis != "fisher":
        raise WeLoreError("the fisher strategy plans on Fisher-weighted spectra: calibrated_fisher(…)"
                          " (the CLI's --calib PATH)")


def threshold_of(spectra: Spectra, config: PlanConfig, scores: Scores) -> float:
    """The k a threshold strategy (welore, energy) plans `config` with: given, or solved for its ERR or budget."""
    pct = params_target(spectra, config)
    target = (config.err or 0.0) / 100.0
    if config.k is not None:
        return config.k
    if pct is not None:
        return solve_k_for_params(spectra.layers, scores.ascending, scores.pooled, config.strategy, pct)
    if config.search == "paper":
        return paper_threshold(scores.ascending, target)
    if config.strategy == "energy":
        return solve_threshold_below(scores.pooled, target)
    return solve_threshold(scores.pooled, target)


def params_target(spectra: Spectra, config: PlanConfig) -> float | None:
    """The parameter budget of `config` as percent of the analysed layers removed (None for an ERR or k)."""
    if config.params is not None:
        return config.params
    if config.size_mib is not None:
        return size_to_pct(spectra.layers, spectra.total_params, config.size_mib, config.size_dtype)
    return None


def err_for_k(scores: Scores, k: float) -> float:
    """The inverse of the solve: the ERR (percent) a threshold k gives, without building a plan."""
    if scores.strategy in ("uniform", *GREEDY):
        raise WeLoreError(f"err_for_k needs a threshold strategy's scores, not {scores.strategy}")
    full = sum(a.size for a in scores.ascending)
    kept = int(ranks_at(scores.ascending, k, scores.strategy).sum())
    return 100.0 * (1.0 - kept / full)


def plan_from_ranks(spectra: Spectra, ranks: dict[str, int], config: PlanConfig, k: float | None = None,
                    scores: Scores | None = None) -> RankPlan:
    """A plan with given per-layer ranks (missing layers keep full rank): totals, LRC flags, errors."""
    tails = scores.tail if scores is not None else energy_tails(spectra)
    row = []
    for layer in spectra.layers:
        r = int(ranks.get(layer.name, layer.full_rank))
        if not 1 <= r <= layer.full_rank:
            raise WeLoreError(f"layer {layer.name}: rank {r} outside [1, {layer.full_rank}]")
        row.append(r)
    table, matrix = RankTable.of(spectra, tails), np.array([row])  # one plan: one row
    per_layer = table.per_layer(matrix, config.min_ratio)
    reduction, lrc, factored, errors = (a[0].tolist() for a in per_layer)
    layers = [LayerPlan(l.name, l.block, l.kind, l.shape, l.full_rank, r, reduction[i], lrc[i], l.dense_params,
                        factored[i], errors[i]) for i, (l, r) in enumerate(zip(spectra.layers, row))]
    totals = table.totals(matrix, *per_layer[1:])[0]
    return RankPlan(spectra.model, spectra.fingerprint, config, k, config.err, layers, spectra.total_params, totals)
