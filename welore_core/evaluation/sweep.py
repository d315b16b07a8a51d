"""Strategy sweeps: compress at each (strategy, ERR) and evaluate, one row per point plus the dense model
(the paper's Tables 1 and 2 on any model)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..compression import (Calibration, CompressionConfig, PlanConfig, SpectraConfig, calibration_batches,
                           collect_grams, compute_spectra, make_plan, prepare_scores)
from ..errors import WeLoreError
from ..utils import Progress
from .perplexity import EvalConfig
from .registry import Registry
from .runs import evaluate_point, load_for_eval, token_ids


def sweep(spec: str | Path | None, errs: list[float], strategies: list[str], eval_config: EvalConfig,
          compression: CompressionConfig | None = None, progress: Progress | None = None,
          registry: Registry | None = None, calib: Calibration | None = None,
          spectra_config: SpectraConfig | None = None) -> pd.DataFrame:
    """Compress at each (strategy, ERR) and evaluate; one row per point plus the dense baseline. Every point's
    settings are checked before the model is loaded."""
    compression = compression or CompressionConfig()
    if compression.act_svd and calib is None:
        raise WeLoreError("act_svd needs --calib PATH (a text file for activation statistics)")
    if not errs or not strategies:
        raise WeLoreError("a sweep needs at least one ERR and one strategy")
    points = [PlanConfig(strategy=s, err=float(e)) for s in strategies for e in errs]
    registry = registry or Registry.default()
    loaded = load_for_eval(spec, str(eval_config.torch_device()), eval_config)
    spectra = compute_spectra(loaded.source if loaded.source.streamable else loaded.model,
                              spectra_config or SpectraConfig())
    ids, data_hash = token_ids(loaded, eval_config)
    grams, digest = None, ""
    if compression.act_svd and calib is not None:
        batches, digest = calibration_batches(loaded.model, loaded.tokenizer, calib)
        grams = collect_grams(loaded.model, batches, [l.name for l in spectra.layers])
    extra = compression.identity(calib, digest)
    rows = []
    for i, config in enumerate([None, *points], 1):
        start = time.perf_counter()
        plan = None if config is None else make_plan(spectra, config, prepare_scores(spectra, config.strategy))
        result, cached = evaluate_point(loaded, ids, data_hash, plan, compression, eval_config, registry, grams, extra)
        rows.append({"strategy": config.strategy if config else "dense", "target_err": config.err if config else 0.0,
                     "achieved_err": plan.achieved_err if plan else 0.0, "k": plan.k if plan else None,
                     "lrc": plan.totals.lrc if plan else 0, "params": result["params"], "ppl": result["ppl"],
                     "nll": result["nll"], "tokens": result["tokens"],
                     "seconds": round(time.perf_counter() - start, 3), "cached": cached,
                     "mode": "dense" if plan is None else compression.mode, "act_svd": compression.act_svd})
        if progress:
            label = "dense" if config is None else f"{config.strategy} {config.err:g} %"
            progress(i, len(points) + 1, label)
    return pd.DataFrame(rows)
