"""The dashboard's one module of cached calls into welore_core (hashable ids beside `_objects`)."""
from __future__ import annotations

from typing import Callable

import streamlit as st

import welore_core as wc


def spectra(model: str, dtype: str = "float32", method: str = "svdvals",
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


def fingerprint(model: str) -> str:
    """sha256 of the model's weight files (memoised on disk by file stat, so a warm call is a stat)."""
    from welore_core.experiments import source_fingerprint

    return source_fingerprint(wc.resolve_model(model or None))
