"""Fine-tuning runs from the registry, side by side: one row per run, ratios against full fine-tuning.

Pure functions of the registry (or of result dicts) for the dashboard, the benchmark and reports; the loss
curves figure is `figures.loss_curves_figure`.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..evaluation import Registry

COLUMNS = ("id", "created", "mode", "model", "data", "steps", "seqlen", "batch_size", "trainable_params",
           "total_params", "final_loss",
           "heldout_ppl_before", "heldout_ppl_after", "wikitext_ppl_after", "accuracy_after", "peak_memory_mib",
           "peak_memory_kind", "state_mib", "tokens_per_s", "output")


def runs_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per fine-tuning result (identifying columns first); `loss_curve` kept as a list column."""
    rows = []
    for r in results:
        row = {c: r.get(c) for c in COLUMNS}
        config = r.get("config") or {}
        row["seqlen"], row["batch_size"] = config.get("seqlen"), config.get("batch_size")
        row["loss_curve"] = r.get("loss_curve") or []
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, "loss_curve"])


def finetune_runs(registry: Registry | None = None, limit: int = 200) -> pd.DataFrame:
    """Every recorded fine-tuning run, newest first."""
    return runs_frame((registry or Registry.default()).results("finetune", limit))


def with_ratios(df: pd.DataFrame, baseline: str = "full") -> pd.DataFrame:
    """Add memory / throughput / trainable ratios against the newest `baseline` run of the same model, data,
    steps, seqlen and batch size (anything else would compare unlike runs)."""
    out = df.copy()
    same = ["model", "data", "steps", "seqlen", "batch_size"]
    for column in ("trainable_params", "peak_memory_mib", "state_mib", "tokens_per_s"):
        ratios = []
        for _, row in out.iterrows():
            match = out["mode"] == baseline
            for key in same:
                match &= out[key] == row[key]
            base = out[match]
            value = base[column].iloc[0] if len(base) else None
            ratios.append(row[column] / value if value and row[column] is not None else None)
        out[f"{column}_vs_{baseline}"] = ratios
    return out
