"""Strategy sweeps: compress at each (strategy, ERR) and evaluate, one row per point plus the dense model
(the paper's Tables 1 and 2 on any model)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..compression.apply import CompressionConfig
from ..compression.plan import CALIBRATED, DATA_AWARE, GREEDY, PlanConfig, make_plan, prepare_scores
from ..compression.spectra import (Calibration, Spectra, SpectraConfig, calibrated_fisher, calibrated_spectra,
                                   compute_spectra)
from ..errors import WeLoreError
from ..utils import Progress
from .perplexity import EvalConfig
from .registry import Registry
from .runs import evaluate_point, load_for_eval, point_tasks, token_ids
from .zeroshot import ZeroShotConfig


def perplexity_sweep(spec: str | Path | None, errs: list[float], strategies: list[str], eval_config: EvalConfig,
          compression: CompressionConfig | None = None, progress: Progress | None = None,
          registry: Registry | None = None, calib: Calibration | None = None,
          spectra_config: SpectraConfig | None = None, params: list[float] | None = None,
          tasks: ZeroShotConfig | None = None) -> pd.DataFrame:
    """Compress at each (strategy, ERR) — or (strategy, parameters removed) with `params` — and evaluate; one
    row per point plus the dense baseline. Every point's settings are checked before the model is loaded.
    The data-aware strategies plan on whitened spectra from `calib`, whose statistics ActSVD then reuses. With
    `tasks`, every point also gets the harness's accuracy on them (`acc_<task>` and `acc_stderr_<task>` columns),
    each a registry row of its own."""
    compression = compression or CompressionConfig()
    if (compression.act_svd or set(CALIBRATED) & set(strategies)) and calib is None:
        raise WeLoreError("act_svd and the whitened and fisher strategies need --calib PATH (activation statistics)")
    if not (errs or params) or not strategies:
        raise WeLoreError("a sweep needs at least one ERR (or parameter budget) and one strategy")
    points = ([PlanConfig(strategy=s, params=float(p)) for s in strategies for p in params] if params
              else [PlanConfig(strategy=s, err=float(e)) for s in strategies for e in errs])
    registry = registry or Registry.default()
    loaded = load_for_eval(spec, str(eval_config.torch_device()), eval_config)
    spectra = compute_spectra(loaded.source if loaded.source.streamable else loaded.model,
                              spectra_config or SpectraConfig())
    ids, data_hash = token_ids(loaded, eval_config)
    grams, digest, whitened = None, "", None
    bases: dict[str, Spectra] = {}
    if calib is not None and (compression.act_svd or set(strategies) & set(DATA_AWARE)):
        whitened, grams, digest = calibrated_spectra(loaded.model, loaded.tokenizer, calib, like=spectra)
        if "fisher" in strategies:
            bases["fisher"] = calibrated_fisher(loaded.model, loaded.tokenizer, calib, whitened)
    extra = compression.identity(calib, digest)
    rows = []
    for i, config in enumerate([None, *points], 1):
        start = time.perf_counter()
        basis = spectra
        if config is not None and config.strategy in DATA_AWARE and whitened is not None:
            basis = bases.get(config.strategy, whitened)
        plan = None if config is None else make_plan(basis, config, prepare_scores(basis, config.strategy)
                                                     if config.strategy not in GREEDY else None)
        result, cached = evaluate_point(loaded, ids, data_hash, plan, compression, eval_config, registry,
                                        grams if compression.act_svd else None, extra)
        rows.append({"strategy": config.strategy if config else "dense", "target_err": config.err if config else 0.0,
                     "target_params": config.params if config else None,
                     "params_removed_pct": plan.totals.params_removed_pct if plan else 0.0,
                     "achieved_err": plan.achieved_err if plan else 0.0, "k": plan.k if plan else None,
                     "lrc": plan.totals.lrc if plan else 0, "params": result["params"], "ppl": result["ppl"],
                     "nll": result["nll"], "tokens": result["tokens"],
                     "seconds": round(time.perf_counter() - start, 3), "cached": cached,
                     "mode": "dense" if plan is None else compression.mode, "act_svd": compression.act_svd})
        if tasks is not None:
            rows[-1].update(point_tasks(loaded, plan, compression, grams if compression.act_svd else None, extra,
                                         tasks, registry))
        if progress:
            target = None if config is None else config.err if config.err is not None else config.params
            label = "dense" if config is None else f"{config.strategy} {target:g} %"
            progress(i, len(points) + 1, label)
    return pd.DataFrame(rows)

