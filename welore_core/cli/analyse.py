"""`welore spectra | plan | validate | prepare`: where a model is low-rank, and a rank plan for it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..compression.plan import (NORMALIZATIONS, PlanConfig, block_table, make_plan, missing_layers, plan_by_type,
                                plan_from_rankmap, rankmap_dict, read_rankmap, save_rankmap, spectra_by_type)
from ..compression.spectra import METHODS as SVD_METHODS
from ..compression.spectra import Spectra, SpectraConfig, compute_spectra
from ..errors import WeLoreError
from ..models import load_model, placement, resolve_model
from .common import add_model, add_output, config_from, human, option, output_of, placement_options, tqdm_progress
from .planning import (calibration, calibration_options, greedy_weights, has_target, needs_calibration, planning_basis,
                       target_options)

SVD_DTYPES = ("float32", "float64")


def spectra_options(p: argparse.ArgumentParser) -> None:
    option(p, SpectraConfig, "dtype", "SVD precision", choices=SVD_DTYPES)
    option(p, SpectraConfig, "method", "singular value algorithm (auto: gram, float64 eigvalsh of the Gram matrix)",
           choices=SVD_METHODS)
    placement_options(p, SpectraConfig)
    option(p, SpectraConfig, "with_head", "also analyse lm_head")
    option(p, SpectraConfig, "include", "regex: only layers whose dotted name matches")
    option(p, SpectraConfig, "exclude", "regex: drop layers whose dotted name matches")
    option(p, SpectraConfig, "use_cache", "neither read nor write cache/spectra", flag="--no-cache")


def load_spectra(args: argparse.Namespace) -> Spectra:
    """The spectra of the command's model and options, cache notes as warnings on stderr."""
    spectra = compute_spectra(args.model, config_from(SpectraConfig, args), progress=tqdm_progress("spectra"))
    for note in spectra.notes:
        print(f"welore: warning: {note}", file=sys.stderr)
    return spectra


def cmd_spectra(args: argparse.Namespace) -> dict[str, Any]:
    spectra = load_spectra(args)
    by_type = spectra_by_type(spectra)
    if human(args):
        print(f"model        {spectra.model}\nfingerprint  {spectra.fingerprint[:16]}\n"
              f"layers       {len(spectra.layers)} in {len({l.block for l in spectra.layers if l.block >= 0})} blocks, "
              f"{spectra.total_params / 1e6:.1f}M parameters in the model\n"
              f"spectra      {spectra.config.setting}, {spectra.from_cache} from cache, {spectra.seconds:.2f} s\n")
        print(by_type.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        if args.layers:
            print()
            print(spectra.frame().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    frame = spectra.frame()
    return {"model": spectra.model, "fingerprint": spectra.fingerprint, "setting": spectra.config.setting,
            "layers": len(spectra.layers), "total_params": spectra.total_params, "from_cache": spectra.from_cache,
            "seconds": round(spectra.seconds, 4), "by_type": by_type.to_dict(orient="records"),
            "per_layer": frame.to_dict(orient="records")}


def plan_options(p: argparse.ArgumentParser) -> None:
    option(p, PlanConfig, "min_ratio", "reduction above which a layer is an LRC")
    option(p, PlanConfig, "normalization", "per-layer normalisation of the spectrum", choices=NORMALIZATIONS)
    option(p, PlanConfig, "search", "exact k, or the paper's 0.005 grid", choices=("exact", "paper"))


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    if not has_target(args):
        raise WeLoreError("plan needs --err PCT, --k K, --params PCT or --size MiB")
    config = config_from(PlanConfig, args)
    calibration(args, needed=needs_calibration(args))  # refused before any work when --calib is missing
    output = output_of(args.output, folder=False, model=args.model)  # never over or into the model it plans
    spectra = load_spectra(args)
    if needs_calibration(args):  # the data-aware strategies plan on σ(W L) of the loaded model
        source = resolve_model(args.model)
        device, dtype = placement(args.device, args.weights_dtype)
        spectra = planning_basis(args, source, load_model(source, dtype, device), spectra)[0] or spectra
    plan = make_plan(spectra, config, weights=greedy_weights(args, spectra.layers))
    if output is not None:
        save_rankmap(plan, output)
    t = plan.totals
    if human(args):
        target = f"target ERR {plan.target_err:g} %, " if plan.target_err is not None else ""
        print(f"model        {plan.model} ({spectra.fingerprint[:16]})\n"
              f"plan         {config.strategy}, {config.normalization}, k = "
              f"{'-' if plan.k is None else format(plan.k, '.6g')}, {target}achieved ERR {plan.achieved_err:.2f} %, "
              f"{t.params_removed_pct:.2f} % of the layers' parameters removed when every layer is stored the "
              "smaller way\n"
              f"partition    {t.lrc} LRC / {t.nlrc} N-LRC (reduction > {config.min_ratio:g})\n"
              f"parameters   {t.params_dense / 1e6:.2f}M dense -> {t.params_compressed / 1e6:.2f}M "
              f"({100 * t.param_ratio:.1f} %), trainable LRC {t.trainable_params / 1e6:.2f}M\n"
              f"bf16 bytes   {t.bytes_dense['bfloat16'] / 2**20:.0f} MiB -> "
              f"{t.bytes_compressed['bfloat16'] / 2**20:.0f} MiB; mean relative error {t.mean_rel_error:.3f}\n")
        print(plan_by_type(plan).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\nreduction % per block (* = LRC)")
        grid = block_table(plan, "reduction")
        lrc = block_table(plan, "lrc")
        cells = grid.map(lambda v: f"{100 * v:.0f}") + lrc.map(lambda v: "*" if v else " ")
        print(cells.to_string())
        if args.output:
            print(f"\nrank map written to {args.output}")
    return {**rankmap_dict(plan), "output": args.output}


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve (and convert) the model, then compute its spectra into the cache unless --no-spectra: the
    dashboard's first page then opens warm (`make run` calls this before starting the server)."""
    source = resolve_model(args.model)
    if human(args):
        print(f"{source.label}: {source.kind} model ready at {source.path}")
    result: dict[str, Any] = {"model": source.label, "kind": source.kind, "path": str(source.path),
                              "weight_files": [str(f) for f in source.weight_files]}
    if args.spectra:
        spectra = compute_spectra(source, SpectraConfig(), progress=tqdm_progress("spectra"))
        result["spectra"] = {"setting": spectra.config.setting, "layers": len(spectra.layers),
                             "from_cache": spectra.from_cache, "seconds": round(spectra.seconds, 3)}
        if human(args):
            print(f"spectra of {len(spectra.layers)} layers cached ({spectra.from_cache} were already), "
                  f"{spectra.seconds:.1f} s")
    return result


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    data = read_rankmap(Path(args.rankmap))
    spectra = load_spectra(args)
    plan = plan_from_rankmap(data, spectra)
    same = data["fingerprint"] == spectra.fingerprint
    dense = missing_layers(data, spectra.layers)
    if human(args):
        print(f"{args.rankmap}: valid for {spectra.model}: {len(data['layers'])} layers, "
              f"achieved ERR {plan.achieved_err:.2f} %, {plan.totals.lrc} LRC"
              + ("" if same else " (made on other weights: fingerprints differ)"))
        if dense:
            print(f"note: {len(dense)} model layer(s) not in the map stay dense, e.g. {dense[0]}")
    return {"valid": True, "layers": len(data["layers"]), "same_fingerprint": same, "achieved_err": plan.achieved_err,
            "unlisted_layers": dense, "totals": plan.totals.to_dict()}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("spectra", help="compute (or load from cache) and summarise per-layer singular values")
    add_model(p)
    spectra_options(p)
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    add_output(p)
    p.set_defaults(run=cmd_spectra)

    p = sub.add_parser("plan", help="allocate per-layer ranks and optionally write a rank map")
    add_model(p)
    spectra_options(p)
    target_options(p, k=True)
    plan_options(p)
    calibration_options(p, act_svd=False)
    p.add_argument("-o", "--output", help="write the rank map JSON here")
    add_output(p)
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("prepare", help="resolve a model (converting a GGUF once) and cache its spectra")
    add_model(p)
    p.add_argument("--no-spectra", dest="spectra", action="store_false", help="only resolve and convert the model")
    add_output(p)
    p.set_defaults(run=cmd_prepare)

    p = sub.add_parser("validate", help="check a rank map JSON against a model")
    p.add_argument("rankmap", help="the rank map JSON file")
    add_model(p)
    spectra_options(p)
    add_output(p)
    p.set_defaults(run=cmd_validate)
