"""Compress-and-evaluate runs, strategy sweeps and per-layer sensitivity scans, recorded in the registry.

These compose the pure pieces (spectra → plan → compress → perplexity) into what a user launches from
the CLI or the dashboard. Every evaluation is keyed by what determines its result, so repeating one is
a registry lookup.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .compress import CompressionConfig, collect_grams, compress_model, count_parameters, factor_layer, truncate_layer
from .errors import WeLoreError
from .evaluate import DATASETS, EvalConfig, check_seqlen, load_corpus, perplexity, tokenize_corpus, windows_of
from .fingerprint import files_fingerprint
from .layers import discover_layers
from .lowrank import LowRankLinear
from .paths import cache_dir
from .plan import PlanConfig, make_plan, prepare_scores
from .rankmap import rankmap_dict
from .registry import Registry, plan_hash, run_key
from .sources import ModelSource, load_model, resolve_model
from .spectra import SpectraConfig, compute_spectra

Progress = Callable[[int, int, str], None]


@dataclass
class Loaded:
    """A model ready to evaluate: module, tokenizer, identity, and the evaluation tokens when asked for."""

    source: ModelSource
    model: nn.Module
    tokenizer: Any
    fingerprint: str
    ids: np.ndarray | None = None  # token ids of the evaluation corpus
    data_hash: str = ""


def source_fingerprint(source: ModelSource) -> str:
    files = source.weight_files or tuple(sorted(source.path.glob("*.safetensors")))
    if not files:
        raise WeLoreError(f"{source.path}: no safetensors weights to fingerprint")
    return files_fingerprint(files, cache_dir() / "fingerprints")


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.path)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WeLoreError(f"{source.path}: no usable tokenizer ({type(err).__name__}: {first})") from None


def load_for_eval(spec: str | Path | None, device: str = "cpu", config: EvalConfig | None = None) -> Loaded:
    """Resolve a model (plain or compressed folder), its tokenizer and, given `config`, the evaluation
    tokens — checked before the model is loaded, so bad data fails fast."""
    source = resolve_model(spec)
    corpus = load_corpus(config.data) if config is not None else None
    tokenizer = load_tokenizer(source)
    ids = None
    if corpus is not None and config is not None:
        ids = tokenize_corpus(tokenizer, corpus)
        windows_of(ids, config)
    return Loaded(source, load_model(source, device=device), tokenizer, source_fingerprint(source), ids,
                  corpus.digest if corpus is not None else "")


def token_ids(loaded: Loaded, config: EvalConfig) -> tuple[np.ndarray, str]:
    """Token ids of the evaluation corpus (loaded with the model, or now), checked to hold one window."""
    if loaded.ids is not None:
        return loaded.ids, loaded.data_hash
    corpus = load_corpus(config.data)
    ids = tokenize_corpus(loaded.tokenizer, corpus)
    windows_of(ids, config)
    return ids, corpus.digest


def _eval_identity(fingerprint: str, phash: str, config: EvalConfig, data_hash: str) -> dict[str, Any]:
    return {"kind": "eval", "fingerprint": fingerprint, "plan_hash": phash, "dataset": config.data,
            "data_hash": data_hash, "token_budget": config.tokens, "seqlen": config.seqlen}


def evaluate_model(spec: str | Path | None, config: EvalConfig, progress: Progress | None = None,
                   registry: Registry | None = None, loaded: Loaded | None = None) -> dict[str, Any]:
    """`welore eval`: perplexity of a model or compressed folder, answered from the registry when known."""
    registry = registry or Registry.default()
    loaded = loaded or load_for_eval(spec, str(config.torch_device()), config)
    ids, data_hash = token_ids(loaded, config)
    manifest_hash = "dense"
    if loaded.source.kind == "compressed":
        from .checkpoint import read_manifest

        manifest = read_manifest(loaded.source.path)
        manifest_hash = plan_hash({**manifest["factored"], **manifest["truncated"]}, manifest["mode"], manifest["act_svd"])
    identity = _eval_identity(loaded.fingerprint, manifest_hash, config, data_hash)
    key = run_key(**identity)
    known = registry.lookup(key)
    if known is not None:
        return {**known, "cached": True}
    result = perplexity(loaded.model, ids, config, progress, dataset=config.data).to_dict()
    result["params"] = count_parameters(loaded.model)
    registry.record(key, {**identity, "model": loaded.source.label, "mode": loaded.source.kind,
                          "params": result["params"], **result}, result)
    return {**result, "cached": False}


@dataclass(frozen=True)
class Calibration:
    """Where ActSVD statistics come from: part of every compression identity."""

    path: str  # a text file (or "wikitext2"/"c4")
    samples: int = 16  # random windows
    seqlen: int = 256  # tokens per window
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise WeLoreError(f"calibration samples must be at least 1, got {self.samples}")
        if self.seqlen < 2:
            raise WeLoreError(f"calibration seqlen must be at least 2, got {self.seqlen}")
        if self.path not in DATASETS and not Path(self.path).expanduser().is_file():
            raise WeLoreError(f"calibration data {self.path!r}: no such file (or one of {DATASETS})")


def calibration_batches(model: nn.Module, tokenizer: Any, calib: Calibration) -> tuple[list[torch.Tensor], str]:
    """Random windows of the calibration text (seeded, reproducible) and the text's digest."""
    check_seqlen(model, calib.seqlen, "calibration seqlen")
    corpus = load_corpus(calib.path)
    ids = tokenize_corpus(tokenizer, corpus)
    if ids.size <= calib.seqlen:
        raise WeLoreError(f"calibration data {calib.path}: {ids.size} tokens, need more than seqlen {calib.seqlen}")
    rng = np.random.default_rng(calib.seed)
    starts = rng.integers(0, ids.size - calib.seqlen, size=calib.samples)
    return [torch.as_tensor(ids[s: s + calib.seqlen], dtype=torch.long)[None] for s in starts], corpus.digest


def compression_identity(config: CompressionConfig, calib: Calibration | None, calib_digest: str = "") -> dict[str, Any]:
    """Everything besides the ranks that changes the compressed weights."""
    extra: dict[str, Any] = {"svd_dtype": config.svd_dtype}
    if config.act_svd and calib is not None:
        extra.update(damp=config.damp, calib=calib_digest, calib_samples=calib.samples, calib_seqlen=calib.seqlen,
                     calib_seed=calib.seed)
    return extra


def evaluate_point(loaded: Loaded, ids: np.ndarray, data_hash: str, rankmap: dict[str, Any] | None,
                   compression: CompressionConfig, eval_config: EvalConfig, registry: Registry,
                   grams: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None,
                   progress: Progress | None = None, save_to: Path | None = None) -> tuple[dict[str, Any], bool]:
    """PPL of `loaded` compressed by `rankmap` (None = dense), from the registry when known.

    The loaded model is never modified: compression works on a copy. With `save_to`, the compressed copy
    is also written as a compressed-model folder (even when the PPL came from the registry).
    """
    ranks = {e["name"]: int(e["rank"]) for e in rankmap["layers"]} if rankmap else None
    identity = _eval_identity(loaded.fingerprint, plan_hash(ranks, compression.mode, compression.act_svd, extra),
                              eval_config, data_hash)
    key = run_key(**identity)
    result = registry.lookup(key)
    if result is not None and save_to is None:
        return result, True
    model = loaded.model
    report = None
    if rankmap is not None:
        model = copy.deepcopy(loaded.model)
        report = compress_model(model, rankmap, compression, grams, progress)
        if save_to is not None:
            from .checkpoint import save_compressed

            save_compressed(model, save_to, rankmap, report, loaded.source.path, loaded.source.label)
    cached = result is not None
    if result is None:
        result = perplexity(model, ids, eval_config, progress, dataset=eval_config.data).to_dict()
        result["params"] = count_parameters(model)
        registry.record(key, {**identity, "model": loaded.source.label, "strategy": rankmap["strategy"] if rankmap else None,
                              "err": _plotted_err(rankmap), "k": rankmap["k"] if rankmap else None,
                              "mode": _plotted_mode(compression) if rankmap else "dense", **result}, result)
    return result, cached


def _plotted_mode(compression: CompressionConfig) -> str:
    """lrc | all, with '+actsvd' when activations whitened the SVD: the chart keeps the two apart."""
    return compression.mode + ("+actsvd" if compression.act_svd else "")


def _plotted_err(rankmap: dict[str, Any] | None) -> float | None:
    """The ERR a run is charted at: the target, or what a k-driven plan achieved."""
    if rankmap is None:
        return None
    return rankmap["target_err"] if rankmap.get("target_err") is not None else rankmap["achieved_err"]


def compress_and_evaluate(spec: str | Path | None, rankmap: dict[str, Any] | None, eval_config: EvalConfig,
                          compression: CompressionConfig | None = None, progress: Progress | None = None,
                          registry: Registry | None = None, save_to: Path | None = None) -> dict[str, Any]:
    """One launch from the dashboard: load, compress with a rank map (weight SVD), save, evaluate."""
    compression = compression or CompressionConfig()
    if compression.act_svd:
        raise WeLoreError("compress_and_evaluate uses weight SVD; run ActSVD through sweep or the CLI")
    loaded = load_for_eval(spec, str(eval_config.torch_device()), eval_config)
    ids, data_hash = token_ids(loaded, eval_config)
    result, cached = evaluate_point(loaded, ids, data_hash, rankmap, compression, eval_config,
                                    registry or Registry.default(), progress=progress, save_to=save_to)
    return {**result, "cached": cached, "model": loaded.source.label,
            "achieved_err": rankmap["achieved_err"] if rankmap else 0.0, "saved_to": str(save_to) if save_to else None}


def sweep(spec: str | Path | None, errs: list[float], strategies: list[str], eval_config: EvalConfig,
          compression: CompressionConfig | None = None, progress: Progress | None = None,
          registry: Registry | None = None, calib: Calibration | None = None) -> pd.DataFrame:
    """Compress at each (strategy, ERR) and evaluate; one row per point plus the dense baseline."""
    compression = compression or CompressionConfig()
    registry = registry or Registry.default()
    loaded = load_for_eval(spec, str(eval_config.torch_device()), eval_config)
    spectra = compute_spectra(loaded.source if loaded.source.streamable else loaded.model, SpectraConfig())
    ids, data_hash = token_ids(loaded, eval_config)
    grams, digest = None, ""
    if compression.act_svd:
        if calib is None:
            raise WeLoreError("act_svd needs --calib PATH (a text file for activation statistics)")
        batches, digest = calibration_batches(loaded.model, loaded.tokenizer, calib)
        grams = collect_grams(loaded.model, batches, [l.name for l in spectra.layers])
    extra = compression_identity(compression, calib, digest)
    points = [("dense", 0.0)] + [(s, float(e)) for s in strategies for e in errs]
    rows = []
    for i, (strategy, err) in enumerate(points, 1):
        start = time.perf_counter()
        plan = None if strategy == "dense" else make_plan(spectra, PlanConfig(strategy=strategy, err=err),
                                                          prepare_scores(spectra, strategy))
        result, cached = evaluate_point(loaded, ids, data_hash, rankmap_dict(plan) if plan else None, compression,
                                        eval_config, registry, grams, extra)
        rows.append({"strategy": strategy, "target_err": err, "achieved_err": plan.achieved_err if plan else 0.0,
                     "k": plan.k if plan else None, "lrc": plan.totals["lrc"] if plan else 0,
                     "params": result["params"], "ppl": result["ppl"], "nll": result["nll"],
                     "tokens": result["tokens"], "seconds": round(time.perf_counter() - start, 3), "cached": cached,
                     "mode": "dense" if plan is None else compression.mode, "act_svd": compression.act_svd})
        if progress:
            progress(i, len(points), f"{strategy} {err:g} %")
    return pd.DataFrame(rows)


def sensitivity_of(spec: str | Path | None, config: EvalConfig, ratio: float = 0.5, by: str = "type",
                   progress: Progress | None = None) -> dict[str, Any]:
    """One launch of the sensitivity scan (for jobs): rows as plain records."""
    loaded = load_for_eval(spec, str(config.torch_device()), config)
    ids, _ = token_ids(loaded, config)
    df = sensitivity_scan(loaded.model, ids, config, ratio, by, progress)
    return {"model": loaded.source.label, "ratio": ratio, "by": by, "rows": df.to_dict(orient="records")}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def sensitivity_scan(model: nn.Module, ids: np.ndarray, config: EvalConfig, ratio: float = 0.5, by: str = "type",
                     progress: Progress | None = None) -> pd.DataFrame:
    """Truncate one layer type (or one layer) at a time to (1 − ratio) of its rank; PPL against dense.

    Weights are truncated in place (dense, rank r) and restored after each measurement.
    """
    if not 0.0 < ratio < 1.0:
        raise WeLoreError(f"sensitivity ratio must be in (0, 1), got {ratio}")
    if by not in ("type", "layer"):
        raise WeLoreError(f"sensitivity groups layers by 'type' or 'layer', got {by!r}")
    layers = discover_layers(model)
    groups: dict[str, list] = {}
    for layer in layers:
        groups.setdefault(layer.kind if by == "type" else layer.name, []).append(layer)
    dense = perplexity(model, ids, config).ppl
    rows = []
    for i, (group, members) in enumerate(groups.items(), 1):
        originals = []
        for layer in members:  # swap in truncated copies; the originals go back untouched
            original = model.get_submodule(layer.name)
            originals.append((layer.name, original))
            rank = max(1, int(np.floor((1.0 - ratio) * layer.full_rank + 0.5)))
            if isinstance(original, LowRankLinear):
                factor_layer(model, layer.name, min(rank, original.rank))
            else:
                _set_module(model, layer.name, copy.deepcopy(original))
                truncate_layer(model, layer.name, rank)
        try:
            ppl = perplexity(model, ids, config).ppl
        finally:
            for name, original in originals:
                _set_module(model, name, original)
        first = members[0]
        rows.append({"group": group, "kind": first.kind, "block": first.block if by == "layer" else -1,
                     "layers": len(members), "ratio": ratio, "ppl": ppl, "dense_ppl": dense,
                     "ppl_increase": ppl / dense})
        if progress:
            progress(i, len(groups), group)
    return pd.DataFrame(rows)
