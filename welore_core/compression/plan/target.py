"""What a model is compressed to, in one form: a rank map (the plan serialised, schema-checked and checked
against the model's layers, every problem at once), made from whatever the caller holds — a `RankPlan`, a rank
map dict (it may come from a user's file), or a plain `{layer name: rank}` dict whose LRCs are the layers
reduced by more than half. `plan_target` makes a target from a rank map file or a fresh plan of the model's
spectra."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from torch import nn

from ...errors import RankMapError, WeLoreError
from ...models import LayerInfo, ModelSource
from ...utils import Progress
from ..spectra import Spectra, SpectraConfig, compute_spectra
from .allocate import LRC_MIN_RATIO, PlanConfig, RankPlan, make_plan
from .rankmap import check_rankmap, custom_rankmap, rankmap_dict, read_rankmap

Target = Union[RankPlan, dict[str, Any]]  # a plan, a rank map dict, or {layer name: rank}


def plan_target(model: nn.Module | ModelSource, plan: PlanConfig | None = None,
                rankmap: str | Path | dict[str, Any] | None = None, spectra: SpectraConfig | None = None,
                progress: Progress | None = None, basis: Spectra | None = None,
                weights: dict[str, float] | None = None) -> Target:
    """What to compress a model to: a rank map (a file or dict, schema-checked) or a fresh plan from the
    model's spectra (`model` is a streamable source or a loaded module), or from `basis` when given (whitened
    spectra for the data-aware strategies); `weights` are the greedy strategy's sensitivity weights."""
    if (plan is None) == (rankmap is None):
        raise WeLoreError("give exactly one of a plan (an ERR, k, parameter or size budget) and a rank map")
    if rankmap is not None:
        return read_rankmap(Path(rankmap).expanduser() if isinstance(rankmap, (str, Path)) else rankmap)
    assert plan is not None
    return make_plan(basis if basis is not None else compute_spectra(model, spectra, progress), plan, weights=weights)


def target_ranks(target: Target) -> dict[str, int]:
    """{layer name: rank} of a target."""
    if isinstance(target, RankPlan):
        return target.ranks()
    if "layers" in target and "schema" in target:
        return {e["name"]: int(e["rank"]) for e in target["layers"]}
    return {str(k): int(v) for k, v in target.items()}


def as_rankmap(target: Target, layers: list[LayerInfo], owner: str) -> dict[str, Any]:
    """`target` as a rank map that fits a model with `layers` (`owner` names the model a plain dict is for);
    RankMapError lists every problem."""
    if isinstance(target, RankPlan):
        data = rankmap_dict(target)
    elif "schema" in target:
        data = read_rankmap(target)
    else:
        known = {l.name for l in layers}
        problems = [f"unknown layer {n}" if n not in known else f"layer {n}: rank {r!r} is not an integer"
                    for n, r in target.items() if n not in known or not isinstance(r, int) or isinstance(r, bool)]
        if problems:
            raise RankMapError(f"rank map for {owner!r} does not fit this model", problems)
        data = custom_rankmap(dict(target), layers, owner, LRC_MIN_RATIO)
    problems = check_rankmap(data, layers)
    if problems:
        raise RankMapError(f"rank map for {data['model']!r} does not fit this model", problems)
    return data
