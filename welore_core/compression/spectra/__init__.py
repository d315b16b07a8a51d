"""Step 1: singular values of every linear weight in the blocks (`compute`: streamed from safetensors or read from a
loaded model, by the algorithms of `svd`, cached per layer by `cache`), and what the data-aware options plan on:
calibration statistics XᵀX (`calibration`), whitened values σ(W·L) (`whitened`) and the output Fisher
(`fisher`)."""
from __future__ import annotations

from .cache import SpectraCache
from .calibration import Calibration, calibration_batches, collect_grams, damped_cholesky
from .compute import Spectra, SpectraConfig, compute_spectra, effective_rank, singular_values, stable_rank
from .fisher import fisher_spectra, output_fisher
from .svd import METHODS, resolve_method, stream_values, values_of
from .whitened import calibrated_fisher, calibrated_spectra, whitened_spectra, whitened_values

__all__ = ["METHODS", "Calibration", "Spectra", "SpectraCache", "SpectraConfig", "calibrated_fisher", "calibrated_spectra",
           "calibration_batches", "collect_grams", "compute_spectra", "damped_cholesky", "effective_rank",
           "fisher_spectra", "output_fisher", "resolve_method", "singular_values", "stable_rank", "stream_values",
           "values_of", "whitened_spectra", "whitened_values"]
