"""Evaluation runs recorded in the registry: a model's perplexity, and a model compressed to a target
(a plan, a rank map) then evaluated — the one path the CLI, sweeps and the dashboard share.

Every evaluation is keyed by what determines its result (fingerprint, compression, data and its hash,
token budget, seqlen), so repeating one is a registry lookup.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compression.apply import CompressionConfig, compress_to, save_compressed
from ..compression.plan import PlanConfig, RankPlan, Target, plan_target, rankmap_dict, target_ranks
from ..compression.spectra import SpectraConfig
from ..data import check_corpus, load_corpus, tokenize_corpus, windows_of
from ..errors import WeLoreError
from ..models import (ModelSource, check_source_seqlen, count_parameters, dtype_name, load_model, load_tokenizer,
                      resolve_model, source_fingerprint)
from ..utils import Progress
from .perplexity import EvalConfig, perplexity
from .attribution import folder_plan_hash, plan_fields, plan_hash, source_fields
from .registry import Registry, run_key
from .zeroshot import ZeroShotConfig, measure_tasks, tasks_dtype, tokenizer_digest


@dataclass
class Loaded:
    """A model ready to evaluate: module, tokenizer, identity, and the evaluation tokens when asked for."""

    source: ModelSource
    model: nn.Module
    tokenizer: Any
    fingerprint: str
    ids: np.ndarray | None = None  # token ids of the evaluation corpus
    data_hash: str = ""


def load_for_eval(spec: str | Path | None, device: str = "cpu", config: EvalConfig | None = None) -> Loaded:
    """Resolve a model (plain or compressed folder), its tokenizer and, given `config`, the evaluation
    tokens — checked before the model is loaded, so bad data fails fast. The weights load in the config's
    dtype (float32 without a config)."""
    if config is not None:
        check_corpus(config.data)
    source = resolve_model(spec)
    if config is not None:  # before the budget: a seqlen past the model's positions is the likelier mistake
        check_source_seqlen(source, config.seqlen)
        config.check_budget()
    corpus = load_corpus(config.data) if config is not None else None
    tokenizer = load_tokenizer(source)
    ids = None
    if corpus is not None and config is not None:
        ids = tokenize_corpus(tokenizer, corpus)
        windows_of(ids, config.seqlen, config.tokens)
    dtype = config.torch_dtype() if config is not None else torch.float32
    return Loaded(source, load_model(source, dtype, device), tokenizer, source_fingerprint(source), ids,
                  corpus.digest if corpus is not None else "")


def token_ids(loaded: Loaded, config: EvalConfig) -> tuple[np.ndarray, str]:
    """Token ids of the evaluation corpus (loaded with the model, or now), checked to hold one window."""
    if loaded.ids is not None:
        return loaded.ids, loaded.data_hash
    corpus = load_corpus(config.data)
    ids = tokenize_corpus(loaded.tokenizer, corpus)
    windows_of(ids, config.seqlen, config.tokens)
    return ids, corpus.digest


def eval_identity(fingerprint: str, phash: str, config: EvalConfig, data_hash: str) -> dict[str, Any]:
    """What an evaluation's result depends on: its registry key is the hash of this."""
    identity = {"kind": "eval", "fingerprint": fingerprint, "plan_hash": phash, "dataset": config.data,
                "data_hash": data_hash, "token_budget": config.tokens, "seqlen": config.seqlen}
    dtype = dtype_name(config.torch_dtype())
    return identity if dtype == "float32" else {**identity, "weights_dtype": dtype}  # float32 keys stay as they were


def evaluate_model(spec: str | Path | None, config: EvalConfig, progress: Progress | None = None,
                   registry: Registry | None = None, loaded: Loaded | None = None, origin: str = "eval") -> dict[str, Any]:
    """`welore eval`: perplexity of a model or compressed folder, answered from the registry when known; a
    compressed folder's row names its source model and plan (`attribution.source_fields`)."""
    registry = registry or Registry.default()
    loaded = loaded or load_for_eval(spec, str(config.torch_device()), config)
    ids, data_hash = token_ids(loaded, config)
    identity = eval_identity(loaded.fingerprint, folder_plan_hash(loaded.source), config, data_hash)
    key = run_key(**identity)
    known = registry.lookup(key)
    if known is not None:
        return {**known, "cached": True}
    result = perplexity(loaded.model, ids, config, progress, dataset=config.data).to_dict()
    result["params"] = count_parameters(loaded.model)
    registry.record(key, {**identity, "model": loaded.source.label, "mode": loaded.source.kind,
                          "params": result["params"], **result, **source_fields(loaded.source, loaded.fingerprint),
                          "origin": origin}, result)
    return {**result, "cached": False}


def evaluate_point(loaded: Loaded, ids: np.ndarray, data_hash: str, target: Target | None,
                   compression: CompressionConfig, eval_config: EvalConfig, registry: Registry,
                   grams: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None,
                   progress: Progress | None = None, save_to: Path | None = None,
                   origin: str = "sweep", batches: list[torch.Tensor] | None = None) -> tuple[dict[str, Any], bool]:
    """PPL of `loaded` compressed to `target` (None = dense), from the registry when known.

    The loaded model is never modified: compression works on a copy. With `save_to`, the compressed copy
    is also written as a compressed-model folder (even when the PPL came from the registry). `batches`: the
    calibration windows the update (`compression.update`) re-solves on.
    """
    identity = eval_identity(loaded.fingerprint, point_plan_hash(target, compression, extra), eval_config, data_hash)
    key = run_key(**identity)
    result = registry.lookup(key)
    if result is not None and save_to is None:
        return result, True
    model = loaded.model
    if target is not None:
        model = copy.deepcopy(loaded.model)
        report = compress_to(model, target, compression, grams, progress, batches=batches)
        if save_to is not None:
            save_compressed(model, save_to, report, loaded.source.path, loaded.source.label,
                            protected=loaded.source.protected())
    cached = result is not None
    if result is None:
        result = perplexity(model, ids, eval_config, progress, dataset=eval_config.data).to_dict()
        result["params"] = count_parameters(model)
        fields = point_fields(loaded, target, compression, extra, origin)
        registry.record(key, {**identity, **fields, **result}, result)
    return result, cached


def point_plan_hash(target: Target | None, compression: CompressionConfig, extra: dict[str, Any] | None = None) -> str:
    """The plan hash of `target` applied in memory with `compression` ("dense" for none)."""
    ranks = target_ranks(target) if target is not None else None
    return plan_hash(ranks, compression.mode, compression.act_svd, extra)


def compressed_copy(loaded: Loaded, target: Target, compression: CompressionConfig,
                    grams: dict[str, torch.Tensor] | None = None,
                    batches: list[torch.Tensor] | None = None) -> nn.Module:
    """A copy of the loaded model compressed to `target` (the loaded model is never modified)."""
    model = copy.deepcopy(loaded.model)
    compress_to(model, target, compression, grams, batches=batches)
    return model


def point_fields(loaded: Loaded, target: Target | None, compression: CompressionConfig,
                 extra: dict[str, Any] | None, origin: str) -> dict[str, Any]:
    """Registry fields of `loaded` compressed in memory to `target` (None: as it is): the model, its source, the
    plan, and the path that measured it."""
    fields: dict[str, Any] = {"model": loaded.source.label, "mode": "dense",
                              **source_fields(loaded.source, loaded.fingerprint), "origin": origin}
    if target is not None:
        fields.update(plan_fields(target_rankmap(target), compression.mode, compression.act_svd,
                                  str((extra or {}).get("calib", ""))))
    return fields


def target_rankmap(target: Target) -> dict[str, Any]:
    """The rank map a target records (a plain {name: rank} dict records ranks only: strategy "custom")."""
    if isinstance(target, RankPlan):
        return rankmap_dict(target)
    if "schema" in target:
        return target
    return {"strategy": "custom", "k": None, "target_err": None, "achieved_err": None}


def compress_and_evaluate(spec: str | Path | None, target: PlanConfig | dict[str, Any] | None, eval_config: EvalConfig,
                          compression: CompressionConfig | None = None, progress: Progress | None = None,
                          registry: Registry | None = None, save_to: Path | None = None,
                          spectra: SpectraConfig | None = None, tasks: ZeroShotConfig | None = None) -> dict[str, Any]:
    """One launch from the dashboard: load, plan (a PlanConfig on the model's spectra, or a rank map dict;
    None = dense), compress (weight SVD), optionally save, evaluate; with `tasks`, the harness's accuracy on
    them too (`acc_<task>`), in the same job."""
    compression = compression or CompressionConfig()
    if compression.act_svd:
        raise WeLoreError("compress_and_evaluate uses weight SVD; run ActSVD through sweep or the CLI")
    loaded = load_for_eval(spec, str(eval_config.torch_device()), eval_config)
    ids, data_hash = token_ids(loaded, eval_config)
    resolved: Target | None = None
    if isinstance(target, PlanConfig):
        resolved = plan_target(loaded.source if loaded.source.streamable else loaded.model, plan=target, spectra=spectra)
    elif target is not None:
        resolved = plan_target(loaded.model, rankmap=target)
    result, cached = evaluate_point(loaded, ids, data_hash, resolved, compression, eval_config,
                                    registry or Registry.default(), progress=progress, save_to=save_to,
                                    origin="dashboard")
    if tasks is not None:
        result = {**result, **point_tasks(loaded, resolved, compression, None, {}, tasks,
                                          registry or Registry.default(), origin="dashboard")}
    achieved = target_rankmap(resolved)["achieved_err"] if resolved is not None else 0.0
    return {**result, "cached": cached, "model": loaded.source.label, "achieved_err": achieved,
            "saved_to": str(save_to) if save_to else None}


def point_tasks(loaded: Loaded, plan: Target | None, compression: CompressionConfig,
                 grams: dict[str, torch.Tensor] | None, extra: dict[str, Any], tasks: ZeroShotConfig,
                 registry: Registry, origin: str = "sweep", batches: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Accuracy of `loaded` compressed to `plan` (None: dense) on `tasks`, as `acc_<task>` and `acc_stderr_<task>`;
    a copy is compressed only when a task is not in the registry yet."""
    identity = {"fingerprint": loaded.fingerprint, "plan_hash": point_plan_hash(plan, compression, extra),
                "tokenizer": tokenizer_digest(loaded.source.path), "weights_dtype": dtype_name(tasks_dtype(tasks))}
    fields = point_fields(loaded, plan, compression, extra, origin)

    def model_of() -> tuple[torch.nn.Module, Any]:
        return loaded.model if plan is None else compressed_copy(loaded, plan, compression, grams, batches), loaded.tokenizer

    rows = measure_tasks(tasks, identity, fields, model_of, registry)
    return {column: r[name] for r in rows for column, name in ((f"acc_{r['task']}", "acc"),
                                                              (f"acc_stderr_{r['task']}", "acc_stderr"))}


def card_measurements(folder: Path) -> list[str]:
    """The registry's measurements of this folder's weights (perplexity, zero-shot accuracy), one line each."""
    try:
        runs = Registry.default().frame("eval")
        fingerprint = source_fingerprint(resolve_model(folder))
    except (OSError, ValueError):  # WeLoreError included: gone, damaged
        return []
    mine = runs[runs["fingerprint"] == fingerprint] if len(runs) else runs
    lines = []
    for _, r in mine.iterrows():
        if r.get("ppl") == r.get("ppl") and r.get("ppl") is not None:  # not NaN
            lines.append(f"| perplexity | {r['dataset']} (windows of {int(r['seqlen'])}, {int(r['tokens'])} tokens) | "
                         f"{r['ppl']:.3f} |")
        elif r.get("acc") == r.get("acc") and r.get("acc") is not None:
            limit = "whole set" if r.get("limit_n") != r.get("limit_n") or r.get("limit_n") is None else \
                f"first {int(r['limit_n'])}"
            lines.append(f"| {r['task']} accuracy | {int(r['num_fewshot'])}-shot, {limit}, lm-eval {r['harness']} | "
                         f"{r['acc']:.4f} ± {r['acc_stderr']:.4f} |")
    return sorted(set(lines))
