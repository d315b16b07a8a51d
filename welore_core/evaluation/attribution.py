"""Which model and plan a measurement belongs to, whichever path measured it.

A compressed folder evaluated on its own (`welore eval DIR`, the dashboard, a fine-tune) is a compression of
its source model: the registry row carries the source's name and fingerprint and the plan (strategy, target,
k, achieved ERR, parameters removed, mode, ActSVD and calibration), read from the folder's rank map and
manifest, so the row lands on its source model's charts. A folder that was fine-tuned says so (`finetuned`),
so a fine-tuned point is never drawn as a plain compression. `chart_runs` sorts a model's rows into what a
chart can place and what it cannot, with the reason.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..models import FINETUNE_RECORD, ModelSource, read_manifest
from ..utils import read_json

# the registry's attribution columns (beside model, fingerprint, strategy, err, k, mode, params, ...)
ATTRIBUTION = {"source_model": "TEXT", "source_fingerprint": "TEXT", "target": "TEXT", "achieved_err": "REAL",
               "params_removed_pct": "REAL", "act_svd": "INTEGER", "calibration": "TEXT", "finetuned": "TEXT",
               "folder": "TEXT", "origin": "TEXT", "attribution": "TEXT"}
ORIGINS = ("eval", "sweep", "dashboard", "finetune", "bench")  # the path that measured a row (`welore eval`: "eval")
GONE = "unattributed: its compressed folder is gone (or was evaluated from another directory)"


def describe_target(rankmap: dict[str, Any]) -> str:
    """The one target a rank map records, as "err 30", "params 10", "size 200 MiB", "k 0.25" or "ranks"."""
    if rankmap.get("target_err") is not None:
        return f"err {rankmap['target_err']:g}"
    if rankmap.get("target_params") is not None:
        return f"params {rankmap['target_params']:g}"
    if rankmap.get("target_size_mib") is not None:
        return f"size {rankmap['target_size_mib']:g} MiB"
    if rankmap.get("k") is not None:
        return f"k {rankmap['k']:g}"
    return "ranks"


def plan_fields(rankmap: dict[str, Any], mode: str, act_svd: bool, calibration: str = "") -> dict[str, Any]:
    """Registry fields of a compression made from `rankmap` in `mode` ("lrc" or "all")."""
    totals = rankmap.get("totals") or {}
    achieved = rankmap.get("achieved_err", totals.get("achieved_err"))
    return {"strategy": rankmap.get("strategy"), "k": rankmap.get("k"),
            "err": rankmap["target_err"] if rankmap.get("target_err") is not None else achieved,
            "mode": mode + ("+actsvd" if act_svd else ""), "target": describe_target(rankmap), "achieved_err": achieved,
            "params_removed_pct": totals.get("params_removed_pct"), "act_svd": int(bool(act_svd)),
            "calibration": calibration}


def source_fields(source: ModelSource, fingerprint: str) -> dict[str, Any]:
    """Registry fields naming what `source` is a measurement of: itself when dense; for a compressed folder its
    source model and plan, and the fine-tuning that made it when one did."""
    if source.kind != "compressed":
        return {"source_model": source.label, "source_fingerprint": fingerprint}
    manifest = read_manifest(source.path)
    rankmap = read_json(source.path / "rankmap.json", "rank map")
    fields = plan_fields(rankmap, manifest.get("mode", "lrc"), bool(manifest.get("act_svd")),
                         str(manifest.get("calibration", "")))
    record = source.path / FINETUNE_RECORD
    finetuned = str(read_json(record, "fine-tuning record").get("mode", "")) or None if record.is_file() else None
    return {**fields, "source_model": manifest.get("base_model") or rankmap.get("model"),
            "source_fingerprint": manifest.get("base_fingerprint") or rankmap.get("fingerprint"),
            "finetuned": finetuned, "folder": str(source.path.resolve())}


def plan_hash(ranks: dict[str, int] | None, mode: str = "dense", act_svd: bool = False,
              extra: dict[str, Any] | None = None) -> str:
    """Identity of a compression: the per-layer ranks and how they were applied ("dense" = none).

    `extra` carries whatever else changes the factors: the compression settings (damping, SVD dtype)
    and, for ActSVD, the calibration data's digest, samples, seqlen and seed.
    """
    if not ranks:
        return "dense"
    blob = json.dumps({"ranks": dict(sorted(ranks.items())), "mode": mode, "act_svd": act_svd, **(extra or {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def folder_plan_hash(source: ModelSource) -> str:
    """The plan hash of a compressed folder (the ranks and mode its manifest records); "dense" otherwise."""
    if source.kind != "compressed":
        return "dense"
    manifest = read_manifest(source.path)
    return plan_hash({**manifest["factored"], **manifest["truncated"]}, manifest["mode"], manifest["act_svd"])


def backfill_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Attribution of a registry row written before these columns: a dense or in-memory compression is its own
    model's; a compressed folder's is read from the folder when it is still where its name points and holds the
    same weights, else the row is marked unattributed (and kept)."""
    if row.get("mode") != "compressed":
        return {"source_model": row.get("model"), "source_fingerprint": row.get("fingerprint")}
    from ..models import resolve_model, source_fingerprint

    folder = Path(str(row.get("model") or ""))
    try:
        source = resolve_model(folder)
        if source.kind == "compressed" and source_fingerprint(source) == row.get("fingerprint"):
            return source_fields(source, str(row.get("fingerprint")))
    except (OSError, ValueError):  # WeLoreError included: gone, moved, damaged
        pass
    return {"attribution": GONE}


def measured_cost(runs: pd.DataFrame, model: str, strategy: str, y: str = "ppl",
                  task: str | None = None) -> dict[str, Any]:
    """What `model`'s plans of `strategy` were measured to cost (one of the explorer's curves): the registry rows a
    chart places, in the setting with the most of them (one data set, window and budget; or, for accuracy, one
    `task`, few-shot and limit), as [ERR, mean value] points sorted by ERR, with the dense value of that setting
    and the setting's name."""
    if y == "acc" and task is not None and len(runs):
        runs = runs[runs["task"] == task]
    placed, _ = chart_runs(runs, model, "err", y) if len(runs) else (runs, runs)
    mine = placed[placed["strategy"] == strategy] if len(placed) else placed
    if mine.empty:
        return {"points": [], "dense": None, "setting": ""}
    setting = placed.apply(_ppl_setting if y == "ppl" else _acc_setting, axis=1)
    chosen = setting[mine.index].value_counts().index[0]
    points = mine[setting[mine.index] == chosen].groupby("err")[y].mean().sort_index()
    dense = placed[(setting == chosen) & placed["strategy"].isna()][y]
    return {"points": [[float(e), float(v)] for e, v in points.items()], "setting": chosen,
            "dense": float(dense.iloc[0]) if len(dense) else None}


def _number(value: Any) -> str:
    return "-" if pd.isna(value) else f"{int(value)}" if float(value).is_integer() else f"{value}"


def _ppl_setting(row: pd.Series) -> str:  # data set · window · token budget
    return f"{row['dataset']} · {_number(row['seqlen'])} · {_number(row['token_budget'])}"


def _acc_setting(row: pd.Series) -> str:  # few-shot · limit · harness version
    limit = "whole set" if pd.isna(row["limit_n"]) else f"limit {_number(row['limit_n'])}"
    return f"{_number(row['num_fewshot'])}-shot · {limit} · harness {row['harness']}"


def measured_costs(runs: pd.DataFrame, model: str, strategy: str) -> list[dict[str, Any]]:
    """Every curve the explorer shows for `model` and `strategy`: perplexity first (always, empty or not), then
    accuracy on each zero-shot task the registry measured a compression of this strategy on, by task name. Each
    is `measured_cost`'s dict with a `label` ("measured PPL", "measured boolq acc") and `higher` (whether a larger
    value is better)."""
    curves = [{"label": "measured PPL", "higher": False, **measured_cost(runs, model, strategy)}]
    if "task" not in runs or "acc" not in runs:
        return curves
    for task in sorted(runs.loc[runs["task"].notna() & runs["acc"].notna(), "task"].astype(str).unique()):
        curve = measured_cost(runs, model, strategy, "acc", task)
        if curve["points"]:
            curves.append({"label": f"measured {task} acc", "higher": True, **curve})
    return curves


def chart_runs(runs: pd.DataFrame, model: str, x: str = "err", y: str = "ppl") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The registry's rows of `model` (measured on it, or on a compression of it) as a chart sees them: rows it
    can place (dense baselines, and compressions with a value on the `x` axis: "err" or "params", and on the `y`
    axis: "ppl" or "acc") and rows it cannot, each with a `reason`."""
    source = runs["source_model"].where(runs["source_model"].notna(), runs["model"]) if len(runs) else runs["model"]
    mine = runs[source == model].copy()
    mine["strategy"] = mine["strategy"].where(mine["strategy"].notna(), None)
    reason = pd.Series("", index=mine.index, dtype=object)
    attribution = mine["attribution"].fillna("") if "attribution" in mine else reason
    reason[attribution != ""] = attribution[attribution != ""]
    compressed = mine["strategy"].notna() | (mine["mode"] == "compressed")
    missing = mine[x].isna() if x in mine else pd.Series(True, index=mine.index)
    reason[(reason == "") & compressed & missing] = f"no {'ERR' if x == 'err' else 'parameter count'} recorded"
    reason[(reason == "") & mine[y].isna()] = f"no {'perplexity' if y == 'ppl' else 'accuracy'} recorded"
    placed, unplaced = mine[reason == ""], mine[reason != ""].assign(reason=reason[reason != ""])
    return placed, unplaced
