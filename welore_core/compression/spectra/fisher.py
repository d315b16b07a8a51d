"""Fisher-weighted whitened spectra: what each cut is expected to cost the model's loss, not one layer's output.

Truncating layer l changes its output by δY = (W - W_r) X, with ‖δY‖_F² = Σ_{i>r} σ_i(W L)² per calibration token
(whitened.py). To second order the loss grows by ½ δyᵀ F δy, F the Fisher of the loss with respect to that
output; with F ≈ f_l I, f_l the mean squared gradient ∂ℓ/∂y over the calibration tokens and output units,
the expected increase is ∝ f_l · Σ_{i>r} σ_i(W L)². So the values √f_l · σ(W L) put every layer's cuts on one
scale, the loss's, and the `fisher` strategy spends a budget greedily on them in absolute terms: layers whose
outputs the loss barely notices (f_l small) give rank first, whatever their relative error.

One backward pass per calibration window, parameters frozen; the model is left as it was found.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...errors import WeLoreError
from ...utils import Progress
from .compute import Spectra


def output_fisher(model: nn.Module, batches: list[torch.Tensor], names: list[str],
                  progress: Progress | None = None) -> dict[str, float]:
    """f_l = mean of (∂ℓ/∂y)² over every calibration token and output unit of each named layer, ℓ the summed
    next-token NLL of a window (the empirical Fisher's diagonal, averaged to one number per layer)."""
    sums = {n: 0.0 for n in names}
    counts = {n: 0 for n in names}
    hooks = []

    def on_output(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                def grad_hook(g: torch.Tensor) -> None:
                    sums[name] += float(g.detach().to(torch.float64).pow(2).sum())
                    counts[name] += g.numel()
                output.register_hook(grad_hook)
        return hook

    def leaf(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)  # gradients flow from here on, to no parameter

    frozen = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    for name in names:
        hooks.append(model.get_submodule(name).register_forward_hook(on_output(name)))
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    if embeddings is None:
        raise WeLoreError(f"{type(model).__name__} has no input embeddings: the Fisher pass needs a causal LM")
    hooks.append(embeddings.register_forward_hook(leaf))
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(False)
        device = next(model.parameters()).device
        with torch.enable_grad():
            for i, batch in enumerate(batches, 1):
                batch = batch.to(device)
                out = model(input_ids=batch, labels=batch, use_cache=False)
                loss = out.loss.float() * (batch.numel() - batch.shape[0])  # summed over the predicted tokens
                if not torch.isfinite(loss):
                    raise WeLoreError(f"the Fisher pass met a non-finite loss on calibration window {i}")
                loss.backward()
                if progress:
                    progress(i, len(batches), "fisher")
    finally:
        for h in hooks:
            h.remove()
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        model.train(was_training)
    missing = [n for n in names if counts[n] == 0]
    if missing:
        raise WeLoreError(f"no gradient reached layer {missing[0]} in the Fisher pass ({len(missing)} layer(s))")
    return {n: sums[n] / counts[n] for n in names}


def fisher_spectra(whitened: Spectra, fisher: dict[str, float]) -> Spectra:
    """The whitened spectra scaled layer by layer by √f_l: basis "fisher" (what the fisher strategy plans on).
    Thresholds on min-max normalised values and relative errors are unchanged by the scaling."""
    if whitened.basis != "whitened":
        raise WeLoreError(f"fisher_spectra scales whitened spectra, not {whitened.basis} ones")
    missing = [l.name for l in whitened.layers if l.name not in fisher]
    if missing:
        raise WeLoreError(f"no Fisher value for {len(missing)} layer(s), e.g. {missing[0]}")
    bad = [n for n, f in fisher.items() if not np.isfinite(f) or f < 0]
    if bad:
        raise WeLoreError(f"layer {bad[0]}: Fisher value {fisher[bad[0]]} is not a finite non-negative number")
    values = {l.name: (whitened.values[l.name].astype(np.float64) * np.sqrt(fisher[l.name]))
              for l in whitened.layers}
    spread = [fisher[l.name] for l in whitened.layers]
    note = f"scaled by the loss's output Fisher (f from {min(spread):.3g} to {max(spread):.3g})"
    return dataclasses.replace(whitened, values=values, notes=[*whitened.notes, note], basis="fisher")
