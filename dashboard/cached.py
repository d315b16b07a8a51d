"""The dashboard's one module of cached calls into welore_core (hashable ids beside `_objects`)."""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import streamlit as st

import welore_core as wc
from dashboard import explorer


def spectra(model: str, dtype: str = "float32", method: str = "auto",
            progress: Callable[[int, int, str], None] | None = None) -> wc.Spectra:
    """Spectra of a model spec, straight from the core's on-disk cache on every rerun.

    Deliberately not memoised in the process: a warm read is milliseconds (fingerprints are memoised by
    file stat), so a model whose files change is never shown stale; and st.cache_* functions would
    replay the progress bar the caller draws.
    """
    return wc.compute_spectra(model or None, wc.SpectraConfig(dtype=dtype, method=method), progress=progress)


@st.cache_resource(show_spinner=False, max_entries=16)
def scores(fingerprint: str, setting: str, strategy: str, normalization: str, _spectra: wc.Spectra) -> wc.Scores:
    """Sorted per-layer scores: prepared once per strategy so slider moves plan in milliseconds."""
    return wc.prepare_scores(_spectra, strategy, normalization)


@st.cache_resource(show_spinner=False, max_entries=8)
def explorer_grid(fingerprint: str, setting: str, strategy: str, normalization: str, min_ratio: float,
                  _spectra: wc.Spectra, _scores: wc.Scores | None) -> tuple[str, str]:
    """(id, JSON) of the explorer's grid (explorer.grid_payload): the plans at every ERR grid point and, for
    threshold strategies, every k grid point, built once per strategy."""
    config = wc.PlanConfig(strategy=strategy, normalization=normalization, min_ratio=min_ratio)
    axes = ("err", "k") if strategy in wc.THRESHOLD else ("err",)
    sweeps = {axis: wc.plan_grid(_spectra, config, axis, scores=_scores) for axis in axes}
    grid_id = f"{fingerprint[:16]}:{setting}:{strategy}:{normalization}:{min_ratio:g}"
    return grid_id, explorer.grid_payload(_spectra, sweeps, strategy)


def fingerprint(model: str) -> str:
    """sha256 of the model's weight files (memoised on disk by file stat, so a warm call is a stat)."""
    return wc.source_fingerprint(wc.resolve_model(model or None))


def dynamics_stamp(folder: str) -> tuple[float, int]:
    """Changes whenever the run writes a checkpoint: the cache key of everything read from it."""
    return wc.RunFolder.of(folder).stamp()


@st.cache_data(show_spinner=False, max_entries=16)
def dynamics_across(folder: str, stamp: tuple[float, int], k: float, normalization: str, tail: float,
                    source: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Emergence summary (one row per layer), its course over training, and the claim check of a run."""
    run = wc.load_run(folder)
    config = wc.EmergenceConfig(k=k, normalization=normalization, tail=tail, source=source)
    cosines = wc.gradient_cosines(run, source)
    summary = wc.emergence_summary(run, config, cosines)
    return summary, wc.emergence_over_time(run, config, cosines), wc.claim_check(summary)


@st.cache_data(show_spinner=False, max_entries=32)
def dynamics_layer(folder: str, stamp: tuple[float, int], name: str, source: str) -> dict[str, Any]:
    """One layer of a run: gradient cosine matrix, and gradient and weight spectra over training."""
    run = wc.load_run(folder)
    cos, used = wc.gradient_cosine(run, name, source)
    return {"cos": cos, "used": used, "grad": wc.spectra_over_time(run, name, "grad"),
            "weight": wc.spectra_over_time(run, name, "weight"), "steps": run.steps}
