"""`welore sample`: text the model writes itself, for --calib and finetune --data when no text from the evaluation's
domain is at hand (data-free calibration; see welore_core/evaluation/samples.py)."""
from __future__ import annotations

import argparse
from typing import Any

from ..evaluation import EvalConfig, SampleConfig, sample_from
from .common import add_model, add_output, config_from, human, option, output_of, placement_options, tqdm_progress


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from(SampleConfig, args)
    out = output_of(args.output, folder=False, model=args.model)
    bar = tqdm_progress("sampling", unit="doc") if human(args) else None
    result = sample_from(args.model, config, out, args.device, args.weights_dtype, bar)
    if human(args):
        how = "sampled before, reused" if result.reused else \
            f"{result.seconds:.0f} s, {result.tokens / max(result.seconds, 1e-9):.0f} tokens/s"
        print(f"{result.path}: {result.documents} documents x {config.tokens} tokens ({how}); pass it as --calib, or as "
              "finetune --data for distillation")
    return {"path": str(result.path), "documents": result.documents, "tokens": result.tokens,
            "seconds": round(result.seconds, 2), "reused": result.reused}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sample", help="text the model writes itself (sampled from its beginning-of-text token): "
                                      "calibration and distillation data when none from the target domain is at hand")
    add_model(p)
    option(p, SampleConfig, "sequences", "documents to sample")
    option(p, SampleConfig, "tokens", "tokens per document")
    option(p, SampleConfig, "temperature", "sampling temperature (1: the model's own distribution)")
    option(p, SampleConfig, "top_p", "nucleus sampling threshold (1: the whole distribution)")
    option(p, SampleConfig, "batch_size", "documents generated together (each batch has its own seed)")
    option(p, SampleConfig, "seed", "seed of the first batch")
    p.add_argument("-o", "--output", help="text file to write (default: under the cache, named by model and "
                                          "settings, and reused when there); an interrupted run resumes")
    placement_options(p, EvalConfig)
    add_output(p)
    p.set_defaults(run=cmd_sample)
