"""`welore compress`: apply a rank map (or a fresh plan) to a model and save a compressed model folder, and
optionally fine-tune it right away (`--then-finetune lrc`) to recover what the compression cost."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..compression.apply import (CompressionConfig, CompressionReport, check_output, compress_streamed, compress_to,
                                 save_compressed, streamable)
from ..compression.plan import PlanConfig, plan_target, read_rankmap, target_ranks
from ..compression.spectra import SpectraConfig, calibration_batches, collect_grams, compute_spectra
from ..errors import WeLoreError
from ..finetune import MODES, FinetuneConfig, run_finetune
from ..models import discover_layers, dtype_name, load_model, load_tokenizer, resolve_model, stored_dtypes
from .common import add_model, add_output, config_from, human, option, placement_options, tqdm_progress
from .planning import (budgeted, calibration, calibration_options, greedy_weights, has_target, needs_calibration,
                       planning_basis, target_options, warn_foreign_rankmap)


def cmd_compress(args: argparse.Namespace) -> dict[str, Any]:
    if (args.rankmap is None) == (not has_target(args)):
        raise WeLoreError("compress needs exactly one of --rankmap FILE, --err PCT, --params PCT or --size MiB")
    planned = bool(not args.rankmap and needs_calibration(args))
    calib = calibration(args, needed=planned or args.update, what="" if planned else "--update")
    rankmap = read_rankmap(Path(args.rankmap)) if args.rankmap else None
    budget_map = rankmap is not None and any(rankmap.get(k) is not None for k in ("target_params", "target_size_mib"))
    mode = "all" if args.all_layers or budget_map or (not args.rankmap and budgeted(args)) else "lrc"  # every layer
    config = config_from(CompressionConfig, args, mode=mode)
    plan = config_from(PlanConfig, args) if not args.rankmap else None
    recover = _recovery(args)
    source = resolve_model(args.model)
    check_output(Path(args.output), source.protected())  # before any work: -o never replaces a user's folder
    if rankmap is not None:
        warn_foreign_rankmap(rankmap, source)
    stored = stored_dtypes(source.safetensors_files())  # bf16 in, bf16 out: each tensor as the input stores it
    spectra = SpectraConfig(device=config.device)
    if calib is None and streamable(source):  # tensor by tensor: never the whole model in memory
        weights = greedy_weights(args, _layers_of(source)) if plan is not None else None
        target = plan_target(source, plan=plan, rankmap=args.rankmap, spectra=spectra, weights=weights,
                             progress=tqdm_progress("spectra"))
        report = compress_streamed(source, target, config, Path(args.output), tqdm_progress("compress"))
    else:
        device, dtype = config.placement()
        model = load_model(source, dtype, device)
        weight = compute_spectra(source if source.streamable else model, spectra) if plan is not None else None
        basis, grams, _ = planning_basis(args, source, model, weight) if weight is not None else (None, None, "")
        weights = greedy_weights(args, discover_layers(model)) if plan is not None else None
        target = plan_target(model, plan=plan, rankmap=args.rankmap, basis=basis or weight, weights=weights)
        batches = None
        if (config.act_svd and grams is None) or config.update:
            assert calib is not None
            batches, _ = calibration_batches(model, load_tokenizer(source), calib)
        if config.act_svd and grams is None:
            assert batches is not None
            grams = collect_grams(model, batches, list(target_ranks(target)), tqdm_progress("calibration"))
        report = compress_to(model, target, config, grams if config.act_svd else None,
                             tqdm_progress("compress" + (" and update" if config.update else "")), batches=batches)
        if calib is not None:
            report.calibration = {"data": calib.path, "samples": calib.samples, "seqlen": calib.seqlen,
                                  "seed": calib.seed}
        save_compressed(model, Path(args.output), report, source.path, source.label, stored=stored,
                        protected=source.protected())
    result = _summary(args, source.label, Path(args.output), report, stored[1])
    if recover is not None:
        tuned = run_finetune(args.output, recover, Path(f"{args.output}-{recover.mode}"),
                             tqdm_progress(f"finetune {recover.mode}"))
        result["finetuned"] = {k: getattr(tuned, k) for k in ("output", "mode", "steps", "heldout_ppl_before",
                                                              "heldout_ppl_after", "wikitext_ppl_before",
                                                              "wikitext_ppl_after", "tokens_per_s")}
        if human(args):
            print(f"fine-tuned   {tuned.mode}, {tuned.steps} steps -> {tuned.output}: held-out PPL "
                  f"{tuned.heldout_ppl_before:.3f} -> {tuned.heldout_ppl_after:.3f}"
                  + (f", WikiText-2 PPL {tuned.wikitext_ppl_before:.3f} -> {tuned.wikitext_ppl_after:.3f}"
                     if tuned.wikitext_ppl_after is not None else ""))
    return result


def _layers_of(source: Any) -> list[Any]:
    from ..models import source_layers, tensor_index

    return [l for l in source_layers(source, tensor_index(source.weight_files))[0] if l.block >= 0]


def _recovery(args: argparse.Namespace) -> FinetuneConfig | None:
    """The fine-tuning run of --then-finetune (checked before any compression work)."""
    if not args.then_finetune:
        return None
    if not args.ft_data:
        raise WeLoreError("--then-finetune needs --ft-data PATH (the text to recover on; never the evaluation text)")
    return FinetuneConfig(mode=args.then_finetune, data=args.ft_data, steps=args.ft_steps, seqlen=args.ft_seqlen,
                          lr=args.ft_lr, eval_tokens=max(FinetuneConfig.eval_tokens or 0, args.ft_seqlen),
                          forget_tokens=max(FinetuneConfig.forget_tokens, args.ft_seqlen), save_every=0,
                          device=args.device)


def _summary(args: argparse.Namespace, label: str, out: Path, report: CompressionReport,
             stored: torch.dtype) -> dict[str, Any]:
    before, after = report.bytes(stored.itemsize)
    if human(args):
        print(f"{label} -> {out} ({report.mode} mode{', ActSVD' if report.act_svd else ''})\n"
              f"factored {len(report.factored)} layers, truncated {len(report.truncated)}; parameters "
              f"{report.params_before / 1e6:.2f}M -> {report.params_after / 1e6:.2f}M "
              f"({100 * report.params_after / report.params_before:.1f} %), {before / 2**20:.0f} MiB -> "
              f"{after / 2**20:.0f} MiB in {dtype_name(stored)}, {report.seconds:.1f} s")
        if report.updated:
            before = sum(u.before for u in report.updated.values()) / len(report.updated)
            after_ = sum(u.after for u in report.updated.values()) / len(report.updated)
            print(f"updated      {len(report.updated)} factored layers' A on the calibration windows: mean relative "
                  f"output error {before:.4f} -> {after_:.4f}")
    return {**report.to_dict(), "output": str(out), "bytes_before": before, "bytes_after": after}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compress", help="apply a rank map (or a fresh plan) and save a compressed model folder")
    add_model(p)
    p.add_argument("--rankmap", help="rank map JSON to apply")
    target_options(p)
    p.add_argument("--all-layers", action="store_true",
                   help="every layer at its rank (default: LRCs only; always with --params or --size)")
    calibration_options(p)
    option(p, CompressionConfig, "update", "after the factors, re-solve each factored layer's A by least squares on "
                                           "the calibration windows, layer after layer (SVD-LLM's update; needs --calib)")
    placement_options(p, CompressionConfig)
    p.add_argument("--then-finetune", choices=MODES, help="fine-tune the compressed model right away (recovery)")
    p.add_argument("--ft-data", help="--then-finetune: training text (a file, tinyshakespeare, hub:NAME)")
    p.add_argument("--ft-steps", type=int, default=FinetuneConfig.steps, help="--then-finetune: optimizer steps")
    p.add_argument("--ft-seqlen", type=int, default=FinetuneConfig.seqlen, help="--then-finetune: tokens per window")
    p.add_argument("--ft-lr", type=float, default=FinetuneConfig.lr, help="--then-finetune: peak learning rate")
    p.add_argument("-o", "--output", required=True, help="compressed model folder to write")
    add_output(p)
    p.set_defaults(run=cmd_compress)
