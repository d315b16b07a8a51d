"""Activation-whitened SVD (SVD-LLM, Wang et al. 2024), WeLore's data-aware option for the factors.

With XᵀX = L Lᵀ over calibration inputs X of a layer, truncating W L instead of W minimises
‖(W − W')X‖_F, the error the next layer actually sees. Calibration text is drawn as seeded random windows
(`data.sample_windows`), and the second moments XᵀX of every layer's inputs are collected with forward
pre-hooks in one pass.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ...data import check_corpus, load_corpus, sample_windows, tokenize_corpus
from ...errors import WeLoreError
from ...models import check_seqlen
from ...utils import Progress


@dataclass(frozen=True)
class Calibration:
    """Where ActSVD statistics come from: part of every compression identity."""

    path: str  # a corpus spec: a text file, or wikitext2 / c4 / tinyshakespeare / hub:NAME
    samples: int = 16  # random windows
    seqlen: int = 256  # tokens per window
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise WeLoreError(f"calibration samples must be at least 1, got {self.samples}")
        if self.seqlen < 2:
            raise WeLoreError(f"calibration seqlen must be at least 2, got {self.seqlen}")
        check_corpus(self.path, "calibration data")


def calibration_batches(model: nn.Module, tokenizer: Any, calib: Calibration) -> tuple[list[torch.Tensor], str]:
    """Random windows (1, seqlen) of the calibration text (seeded, reproducible) and the text's digest."""
    check_seqlen(model, calib.seqlen, "calibration seqlen")
    corpus = load_corpus(calib.path, what="calibration data")
    ids = tokenize_corpus(tokenizer, corpus)
    if ids.size <= calib.seqlen:
        raise WeLoreError(f"calibration data {calib.path}: {ids.size} tokens, need more than seqlen {calib.seqlen}")
    windows = sample_windows(ids, calib.seqlen, calib.samples, [calib.seed])  # (samples, seqlen)
    return [w[None] for w in windows], corpus.digest


def collect_grams(model: nn.Module, batches: list[torch.Tensor], names: list[str],
                  progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """XᵀX / tokens (in, in): second moments of the inputs reaching each named layer over calibration
    batches of token ids (averaged, so the A/B balance does not depend on how much data was used).

    Collected where the model is (on the GPU for a model there). Layers fed the very same input tensor
    (q, k and v after one norm; gate and up) share one matrix: computed once, stored once.
    """
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    alias: dict[str, str] = {}  # layer -> the layer whose input (and so Gram matrix) it shares
    seen: dict[int, tuple[weakref.ref[torch.Tensor], str]] = {}  # id of an input in this forward -> first layer
    hooks = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            first = seen.get(id(x))
            if first is not None and first[0]() is x:  # the same tensor object, alive: the same statistics
                alias.setdefault(name, first[1])
                return
            seen[id(x)] = (weakref.ref(x), name)
            flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)  # (tokens, in)
            g = flat.T @ flat
            grams[name] = grams[name] + g if name in grams else g
            counts[name] = counts.get(name, 0) + flat.shape[0]
        return hook

    for name in names:
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook_for(name)))
    model.eval()  # no dropout noise in the statistics
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            for i, batch in enumerate(batches, 1):
                seen.clear()
                model(input_ids=batch.to(device), use_cache=False)
                if progress:
                    progress(i, len(batches), "calibration")
    finally:
        for h in hooks:
            h.remove()
    out = {name: g / counts[name] for name, g in grams.items()}
    return {**out, **{name: out[first] for name, first in alias.items() if first in out}}


def damped_cholesky(gram: torch.Tensor, damp: float) -> torch.Tensor:
    """L (lower, float64) with L Lᵀ = XᵀX + damp · mean(diag) · I: the whitening of SVD-LLM, kept invertible."""
    g = gram.detach().to(torch.float64)
    g = g + damp * g.diagonal().mean().clamp_min(1e-12) * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    return torch.linalg.cholesky(g)  # (in, in), lower
