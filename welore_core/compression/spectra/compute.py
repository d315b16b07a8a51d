"""Per-layer singular values, computed once and cached (WeLore step 1, arXiv 2407.11239 §3).

Two paths give the same numbers: in-memory (an `nn.Module` the caller already holds) and streaming
(straight from `*.safetensors`, one tensor at a time, so memory is bounded by the largest matrix and a
checkpoint far larger than RAM can be analysed). Values are `torch.linalg.svdvals` in float32 by
default (float64 on request), on the GPU when one is present; the paper's path computes the full
`torch.svd` and discards U and V.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...errors import WeLoreError
from ...models import (LayerInfo, ModelSource, TensorIndex, count_parameters, discover_layers, discovery_key,
                       discovery_notes, index_params, linear_weight, load_model, module_fingerprint, placement,
                       resolve_model, select_layers, source_fingerprint, source_layers, stream_tensors, tensor_index)
from ...utils import Progress, cache_dir, parse_device
from .cache import SpectraCache
from .svd import DTYPES, resolve_method, stream_values, values_of


@dataclass(frozen=True)
class SpectraConfig:
    """How singular values are computed and which layers are analysed."""

    dtype: str = "float32"  # SVD precision; float64 for reference-grade tails (2-4x slower on CPU)
    method: str = "auto"  # svdvals (values only), gram (eigvalsh of W^T W in float64) or auto (per device: svd.py)
    device: str = "auto"  # "auto" = cuda when available; not part of the cache key (same values)
    weights_dtype: str = "auto"  # only for a model that must be instantiated (a compressed or .bin folder)
    with_head: bool = False  # also analyse lm_head (the paper does not compress it)
    include: str | None = None  # regex on dotted layer names to keep
    exclude: str | None = None  # regex on dotted layer names to drop
    use_cache: bool = True  # read and write cache/spectra

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise WeLoreError(f"spectra dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        resolve_method(self.method, placement(self.device, self.weights_dtype, "spectra")[0])

    @property
    def resolved_method(self) -> str:
        return resolve_method(self.method, self.torch_device())

    @property
    def setting(self) -> str:
        """The part of the config that changes the numbers: the cache folder name (auto resolved)."""
        return f"{self.dtype}-{self.resolved_method}"

    def torch_device(self) -> torch.device:
        return parse_device(self.device, "spectra device")


@dataclass
class Spectra:
    """Descending singular values of every analysed layer of one model."""

    model: str  # label of the model
    fingerprint: str  # identifies the weights the values came from
    config: SpectraConfig
    layers: list[LayerInfo]
    values: dict[str, np.ndarray]  # layer name -> descending singular values, length full_rank
    total_params: int  # parameters of the whole model (embeddings, norms, head included; tied counted once)
    from_cache: int = 0  # layers read from the cache rather than computed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # cache problems found and repaired
    basis: str = "weight"  # "weight": σ(W); "whitened": σ(W L), XᵀX = L Lᵀ from calibration (whitened.py)

    def frame(self) -> pd.DataFrame:
        """One row per layer: identity first, then spectrum statistics."""
        rows = []
        for l in self.layers:
            s = self.values[l.name].astype(np.float64)
            rows.append({"name": l.name, "block": l.block, "kind": l.kind, "shape": f"{l.shape[0]}x{l.shape[1]}",
                         "full_rank": l.full_rank, "s_max": float(s[0]), "s_min": float(s[-1]),
                         "stable_rank": stable_rank(s), "effective_rank": effective_rank(s)})
        return pd.DataFrame(rows)


def stable_rank(s: np.ndarray) -> float:
    """||W||_F^2 / ||W||_2^2: how many directions carry the energy."""
    return float((s**2).sum() / s[0] ** 2) if s[0] > 0 else 0.0


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp of the entropy of the normalised singular values."""
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def singular_values(weight: torch.Tensor, config: SpectraConfig, device: torch.device | None = None) -> np.ndarray:
    """Descending singular values of one matrix as a numpy array in the config's dtype."""
    device = device or config.torch_device()
    return values_of(weight, config.dtype, resolve_method(config.method, device), device)


def compute_spectra(model: nn.Module | ModelSource | str | Path | None = None, config: SpectraConfig | None = None,
                    progress: Progress | None = None, label: str | None = None) -> Spectra:
    """Singular values of every layer of `model` — an in-memory module, a source, or a model spec to resolve.

    Layers already in the cache are read; the rest are computed and each is saved as soon as it is done.
    """
    config = config or SpectraConfig()
    start = time.perf_counter()
    if isinstance(model, nn.Module):
        if any(p.device.type == "meta" for p in model.parameters()):
            raise WeLoreError(f"{type(model).__name__} has weights on the meta device (not loaded); pass its folder")
        layers_all = discover_layers(model, with_head=True)
        found_notes = discovery_notes(model, layers_all)
        fingerprint = module_fingerprint(model, layers_all)
        label = label or str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__)
        total = count_parameters(model)
        discovery = "module"
        meta = None
        read = _module_reader(model)
    else:
        source = model if isinstance(model, ModelSource) else resolve_model(model)
        label = label or source.label
        if not source.streamable:  # .bin-only or compressed folder: instantiate, then the in-memory path
            device, dtype = placement(config.device, config.weights_dtype, "spectra")
            return compute_spectra(load_model(source, dtype, device), config, progress, label)
        fingerprint = source_fingerprint(source)
        discovery = discovery_key(source)
        meta = SpectraCache(cache_dir(), fingerprint, config.setting).load_meta(discovery) if config.use_cache else None
        index = None
        if meta is not None:
            layers_all, total, found_notes = meta["layers"], int(meta["total_params"]), list(meta["notes"])
        else:
            index = tensor_index(source.weight_files)
            (layers_all, found_notes), total = source_layers(source, index), index_params(index)
        read = _stream_reader(source, index)

    layers = [l for l in layers_all if config.with_head or l.block >= 0]
    if config.include or config.exclude:
        layers = select_layers(layers, config.include, config.exclude)
    cache = SpectraCache(cache_dir(), fingerprint, config.setting)
    values: dict[str, np.ndarray] = {}
    notes: list[str] = list(found_notes)
    if config.use_cache:
        if meta is None and cache.load_meta(discovery) is None:  # the source path has read it already
            cache.save_meta(label, layers_all, total, discovery, found_notes)
        values, bad = cache.load({l.name: l.full_rank for l in layers})
        notes += bad
    from_cache = len(values)
    missing = [l for l in layers if l.name not in values]
    if missing:
        lock = cache.lock() if config.use_cache else None
        if lock is not None:
            lock.acquire()
        try:
            if config.use_cache:  # another process may have finished some while we waited for the lock
                fresh, _ = cache.load({l.name: l.full_rank for l in missing})
                values.update(fresh)
                from_cache += len(fresh)
                missing = [l for l in missing if l.name not in fresh]
            done = len(layers) - len(missing)
            for name, s in stream_values(_checked(read(missing)), config.dtype, config.method, config.torch_device()):
                if config.use_cache:
                    cache.save(name, s)
                values[name] = s
                done += 1
                if progress:
                    progress(done, len(layers), name)
        finally:
            if lock is not None:
                lock.release()
    elif progress:
        progress(len(layers), len(layers), "cached")
    return Spectra(label, fingerprint, config, layers, {l.name: values[l.name] for l in layers}, total,
                   from_cache, time.perf_counter() - start, notes)


Reader = Callable[[list[LayerInfo]], Iterator[tuple[LayerInfo, torch.Tensor]]]


def _checked(items: Iterator[tuple[LayerInfo, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """(layer name, weight) of each read layer, refusing NaN or inf before any SVD sees it."""
    for layer, weight in items:
        if not torch.isfinite(weight).all():
            raise WeLoreError(f"layer {layer.name}: weight {layer.tensor} contains NaN or inf values")
        yield layer.name, weight


def _module_reader(model: nn.Module) -> Reader:
    def read(layers: list[LayerInfo]) -> Iterator[tuple[LayerInfo, torch.Tensor]]:
        for layer in layers:
            found = linear_weight(model.get_submodule(layer.name))
            assert found is not None, layer.name
            yield layer, found[0].detach()
    return read


def _stream_reader(source: ModelSource, index: TensorIndex | None) -> Reader:
    """Read the needed tensors one at a time from the source's safetensors files."""
    def read(layers: list[LayerInfo]) -> Iterator[tuple[LayerInfo, torch.Tensor]]:
        by_tensor = {layer.tensor: layer for layer in layers}
        where = index if index is not None else tensor_index(source.weight_files)
        for name, tensor in stream_tensors(where, list(by_tensor), source.path):
            yield by_tensor[name], tensor
    return read
