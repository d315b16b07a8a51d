"""Per-layer sensitivity: truncate one layer type (or one layer) at a time and measure the perplexity it costs,
with everything else dense — which layers can be compressed, and which cannot."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..compression.apply import factor_layer, truncate_layer
from ..errors import WeLoreError
from ..models import LayerInfo, LowRankLinear, discover_layers, set_module
from ..utils import Progress
from .perplexity import EvalConfig, perplexity
from .runs import load_for_eval, token_ids

GROUPINGS = ("type", "layer")


def check_scan(ratio: float, by: str) -> None:
    """Refuse a scan's settings before any model is loaded."""
    if not 0.0 < ratio < 1.0:
        raise WeLoreError(f"sensitivity ratio must be in (0, 1), got {ratio}")
    if by not in GROUPINGS:
        raise WeLoreError(f"sensitivity groups layers by 'type' or 'layer', got {by!r}")


def sensitivity_of(spec: str | Path | None, config: EvalConfig, ratio: float = 0.5, by: str = "type",
                   progress: Progress | None = None) -> dict[str, Any]:
    """One launch of the sensitivity scan (the CLI, jobs): rows as plain records."""
    check_scan(ratio, by)
    loaded = load_for_eval(spec, str(config.torch_device()), config)
    ids, _ = token_ids(loaded, config)
    df = sensitivity_scan(loaded.model, ids, config, ratio, by, progress)
    return {"model": loaded.source.label, "ratio": ratio, "by": by, "rows": df.to_dict(orient="records")}


def sensitivity_scan(model: nn.Module, ids: np.ndarray, config: EvalConfig, ratio: float = 0.5, by: str = "type",
                     progress: Progress | None = None) -> pd.DataFrame:
    """Truncate one layer type (or one layer) at a time to (1 − ratio) of its rank; PPL against dense.

    Truncated copies are swapped in and the original modules put back after each measurement.
    """
    check_scan(ratio, by)
    groups: dict[str, list[LayerInfo]] = {}
    for layer in discover_layers(model):
        groups.setdefault(layer.kind if by == "type" else layer.name, []).append(layer)
    dense = perplexity(model, ids, config).ppl
    rows = []
    for i, (group, members) in enumerate(groups.items(), 1):
        originals = []
        for layer in members:  # swap in truncated copies; the originals go back untouched
            original = model.get_submodule(layer.name)
            originals.append((layer.name, original))
            rank = max(1, int(np.floor((1.0 - ratio) * layer.full_rank + 0.5)))
            if isinstance(original, LowRankLinear):
                factor_layer(model, layer.name, min(rank, original.rank))
            else:
                set_module(model, layer.name, copy.deepcopy(original))
                truncate_layer(model, layer.name, rank)
        try:
            ppl = perplexity(model, ids, config).ppl
        finally:
            for name, original in originals:
                set_module(model, name, original)
        first = members[0]
        rows.append({"group": group, "kind": first.kind, "block": first.block if by == "layer" else -1,
                     "layers": len(members), "ratio": ratio, "ppl": ppl, "dense_ppl": dense,
                     "ppl_increase": ppl / dense})
        if progress:
            progress(i, len(groups), group)
    return pd.DataFrame(rows)
