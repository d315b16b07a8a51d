"""Whitened spectra: the singular values of W·L, where XᵀX = L Lᵀ over calibration inputs (ActSVD's statistics).

Truncating W·L at rank r leaves an output error ‖(W - W_r) X‖_F² = Σ_{i>r} σ_i(W L)² (SVD-LLM's
truncation-aware view), so these values measure what each cut costs the next layer, where the weight's own
spectrum measures the weight. The result is a `Spectra` with basis "whitened": the `whitened` strategy runs
WeLore's global threshold on it, `greedy` spends a budget on it, and `rel_error` becomes the relative
output error of each layer.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import WeLoreError
from ...models import count_parameters, dense_weight, discover_layers, module_fingerprint
from ...utils import Progress
from .calibration import Calibration, calibration_batches, collect_grams, damped_cholesky
from .compute import Spectra, SpectraConfig
from .fisher import fisher_spectra, output_fisher
from .svd import values_of


def whitened_values(weight: torch.Tensor, gram: torch.Tensor, damp: float = 1e-2) -> np.ndarray:
    """Descending singular values of W L (W (out, in), XᵀX ≈ gram (in, in)), in float64."""
    chol = damped_cholesky(gram, damp)  # (in, in), lower
    m = weight.detach().to(device=chol.device, dtype=torch.float64) @ chol  # (out, in)
    return values_of(m, "float64", "gram", chol.device)  # eigvalsh of the smaller Gram matrix of W L


def whitened_spectra(model: nn.Module, grams: dict[str, torch.Tensor], calib_digest: str = "", damp: float = 1e-2,
                     label: str | None = None, progress: Progress | None = None,
                     like: Spectra | None = None) -> Spectra:
    """σ(W L) of every linear layer in the blocks of `model` (or of the layers `like` analyses, with its model
    label and weights' fingerprint, so a plan on them is recorded as one of these weights), from
    `collect_grams` statistics. The calibration digest is kept in the Spectra's notes."""
    layers = like.layers if like is not None else discover_layers(model)
    missing = [l.name for l in layers if l.name not in grams]
    if missing:
        raise WeLoreError(f"no calibration statistics for {len(missing)} layer(s), e.g. {missing[0]}")
    values = {}
    for i, layer in enumerate(layers, 1):
        weight = dense_weight(model.get_submodule(layer.name), layer.name)  # (out, in)
        try:
            values[layer.name] = whitened_values(weight, grams[layer.name], damp)
        except torch.linalg.LinAlgError as err:
            raise WeLoreError(f"layer {layer.name}: the calibration statistics are not positive definite ({err}); "
                              "raise the damping") from None
        if progress:
            progress(i, len(layers), layer.name)
    fingerprint = like.fingerprint if like is not None else module_fingerprint(model, layers)
    label = label or (like.model if like is not None else
                      str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__))
    return Spectra(label, fingerprint, SpectraConfig(dtype="float64", method="gram", use_cache=False), layers, values,
                   count_parameters(model), notes=[f"whitened by calibration text {calib_digest[:16]}, damp {damp:g}"],
                   basis="whitened")


def calibrated_spectra(model: nn.Module, tokenizer: object, calib: Calibration, damp: float = 1e-2,
                       progress: Progress | None = None,
                       like: Spectra | None = None) -> tuple[Spectra, dict[str, torch.Tensor], str]:
    """Whitened spectra of `model` from `calib`'s text (of the layers `like` analyses, when given), with the
    Gram matrices (ActSVD reuses them) and the text's digest: one calibration pass for both."""
    batches, digest = calibration_batches(model, tokenizer, calib)
    layers = like.layers if like is not None else discover_layers(model)
    grams = collect_grams(model, batches, [l.name for l in layers], progress)
    return whitened_spectra(model, grams, digest, damp, like=like), grams, digest


def calibrated_fisher(model: nn.Module, tokenizer: object, calib: Calibration, whitened: Spectra,
                      progress: Progress | None = None) -> Spectra:
    """The Fisher-weighted spectra (basis "fisher", what the fisher strategy plans on) beside whitened spectra
    already made from `calib`: a backward pass over the same windows."""
    batches, _ = calibration_batches(model, tokenizer, calib)
    return fisher_spectra(whitened, output_fisher(model, batches, [l.name for l in whitened.layers], progress))
