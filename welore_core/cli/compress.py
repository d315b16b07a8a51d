"""`welore compress`: apply a rank map (or a fresh plan) to a model and save a compressed model folder."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..compression import (STRATEGIES, Calibration, CompressionConfig, CompressionReport, PlanConfig, SpectraConfig,
                           calibration_batches, collect_grams, compress_streamed, compress_to, load_model, plan_target,
                           save_compressed, streamable, target_ranks)
from ..compression.folder import check_output
from ..errors import WeLoreError
from ..models import dtype_name, load_tokenizer, resolve_model, stored_dtypes
from .common import add_model, add_output, config_from, human, option, placement_options, tqdm_progress


def calibration_options(p: argparse.ArgumentParser, sizes: bool = True) -> None:
    option(p, CompressionConfig, "act_svd", "activation-whitened SVD (SVD-LLM) instead of weight SVD")
    p.add_argument("--calib", help="calibration text for ActSVD: a file, wikitext2, tinyshakespeare or hub:NAME")
    if sizes:
        option(p, Calibration, "samples", "calibration windows", flag="--calib-samples")
        option(p, Calibration, "seqlen", "tokens per calibration window", flag="--calib-seqlen")


def calibration(args: argparse.Namespace) -> Calibration | None:
    """The Calibration of the options (None without --act-svd); --act-svd without --calib is refused."""
    if not args.act_svd:
        return None
    if not args.calib:
        raise WeLoreError("--act-svd needs --calib PATH (a text file for activation statistics)")
    sizes = {"samples": args.samples, "seqlen": args.seqlen} if hasattr(args, "samples") else {}
    return Calibration(args.calib, **sizes)


def cmd_compress(args: argparse.Namespace) -> dict[str, Any]:
    if (args.rankmap is None) == (args.err is None):
        raise WeLoreError("compress needs exactly one of --rankmap FILE or --err PCT")
    calib = calibration(args)
    config = config_from(CompressionConfig, args, mode="all" if args.all_layers else "lrc")
    plan = config_from(PlanConfig, args) if args.err is not None else None
    source = resolve_model(args.model)
    check_output(Path(args.output), source.path)  # before any work: -o never replaces a user's folder
    stored = stored_dtypes(source.safetensors_files())[1]  # bf16 in, bf16 out
    spectra = SpectraConfig(device=config.device)
    if calib is None and streamable(source):  # tensor by tensor: never the whole model in memory
        target = plan_target(source, plan=plan, rankmap=args.rankmap, spectra=spectra, progress=tqdm_progress("spectra"))
        report = compress_streamed(source, target, config, Path(args.output), tqdm_progress("compress"))
        return _summary(args, source.label, Path(args.output), report, stored)
    device, dtype = config.placement()
    model = load_model(source, dtype, device)
    target = plan_target(source if source.streamable else model, plan=plan, rankmap=args.rankmap, spectra=spectra,
                         progress=tqdm_progress("spectra"))
    grams = None
    if calib is not None:
        batches, _ = calibration_batches(model, load_tokenizer(source), calib)
        grams = collect_grams(model, batches, list(target_ranks(target)), tqdm_progress("calibration"))
    report = compress_to(model, target, config, grams, tqdm_progress("compress"))
    out = save_compressed(model, Path(args.output), report, source.path, source.label, dtype=stored)
    return _summary(args, source.label, out, report, stored)


def _summary(args: argparse.Namespace, label: str, out: Path, report: CompressionReport,
             stored: torch.dtype) -> dict[str, Any]:
    before, after = report.bytes(stored.itemsize)
    if human(args):
        print(f"{label} -> {out} ({report.mode} mode{', ActSVD' if report.act_svd else ''})\n"
              f"factored {len(report.factored)} layers, truncated {len(report.truncated)}; parameters "
              f"{report.params_before / 1e6:.2f}M -> {report.params_after / 1e6:.2f}M "
              f"({100 * report.params_after / report.params_before:.1f} %), {before / 2**20:.0f} MiB -> "
              f"{after / 2**20:.0f} MiB in {dtype_name(stored)}, {report.seconds:.1f} s")
    return {**report.to_dict(), "output": str(out), "bytes_before": before, "bytes_after": after}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compress", help="apply a rank map (or a fresh plan) and save a compressed model folder")
    add_model(p)
    p.add_argument("--rankmap", help="rank map JSON to apply")
    option(p, PlanConfig, "err", "plan at this ERR (percent) instead of reading a rank map", default=None)
    option(p, PlanConfig, "strategy", "rank allocation strategy for --err", choices=STRATEGIES)
    p.add_argument("--all-layers", action="store_true", help="every layer at its rank (default: LRCs only)")
    calibration_options(p)
    placement_options(p, CompressionConfig)
    p.add_argument("-o", "--output", required=True, help="compressed model folder to write")
    add_output(p)
    p.set_defaults(run=cmd_compress)
