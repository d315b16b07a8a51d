"""Tables that summarise spectra and plans per layer type and per block (for the CLI and the dashboard)."""
from __future__ import annotations

import pandas as pd

from ..spectra.compute import Spectra
from .allocate import RankPlan


def spectra_by_type(spectra: Spectra) -> pd.DataFrame:
    """One row per layer type: count, shape, mean stable and effective rank (how heavy the tail is)."""
    df = spectra.frame()
    g = df.groupby("kind", sort=False)
    out = g.agg(layers=("name", "size"), shape=("shape", "first"), full_rank=("full_rank", "first"),
                stable_rank=("stable_rank", "mean"), effective_rank=("effective_rank", "mean"))
    out["effective_rank_pct"] = 100.0 * out["effective_rank"] / out["full_rank"]
    return out.reset_index()


def plan_by_type(plan: RankPlan) -> pd.DataFrame:
    """One row per layer type: mean kept rank, reduction range, how many of its layers are LRCs."""
    df = plan.frame()
    g = df.groupby("kind", sort=False)
    out = g.agg(layers=("name", "size"), full_rank=("full_rank", "first"), mean_rank=("rank", "mean"),
                reduction_min=("reduction", "min"), reduction_mean=("reduction", "mean"),
                reduction_max=("reduction", "max"), lrc=("lrc", "sum"), rel_error=("rel_error", "mean"))
    return out.reset_index()


def block_table(plan: RankPlan, value: str = "reduction") -> pd.DataFrame:
    """Blocks x layer types of one per-layer value (Figure 6 of the paper is this grid of `reduction`)."""
    df = plan.frame()
    kinds = list(dict.fromkeys(df["kind"]))
    return df.pivot(index="block", columns="kind", values=value)[kinds]
