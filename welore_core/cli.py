"""`welore`: the command-line face of welore_core (a thin layer: parse, call the core, print).

Every command takes an optional MODEL (default: the embedded SmolLM2-135M-Instruct) and `--json`, which
prints one JSON object as the last line of stdout. Errors are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import RankMapError, WeLoreError

Progress = Callable[[int, int, str], None]


def tqdm_progress(desc: str) -> Progress:
    """Adapt the core's progress callback to a tqdm bar on stderr."""
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int, name: str) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit="layer", file=sys.stderr, disable=None, leave=False))
        bar[0].n = done
        bar[0].set_postfix_str(name[-40:], refresh=False)
        bar[0].refresh()
        if done >= total:
            bar[0].close()

    return update


def _spectra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="model folder, .gguf, .safetensors(.index.json) or hub id (default: embedded SmolLM2-135M)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="SVD precision")
    p.add_argument("--method", default="svdvals", choices=["svdvals", "gram"], help="singular value algorithm")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda[:N]")
    p.add_argument("--with-head", action="store_true", help="also analyse lm_head")
    p.add_argument("--include", help="regex: only layers whose dotted name matches")
    p.add_argument("--exclude", help="regex: drop layers whose dotted name matches")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cache/spectra")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def _spectra(args: argparse.Namespace) -> Any:
    from .spectra import SpectraConfig, compute_spectra

    config = SpectraConfig(dtype=args.dtype, method=args.method, device=args.device, with_head=args.with_head,
                           include=args.include, exclude=args.exclude, use_cache=not args.no_cache)
    spectra = compute_spectra(args.model, config, progress=tqdm_progress("spectra"))
    for note in spectra.notes:
        print(f"welore: warning: {note}", file=sys.stderr)
    return spectra


def cmd_spectra(args: argparse.Namespace) -> dict[str, Any]:
    from .summary import spectra_by_type

    spectra = _spectra(args)
    by_type = spectra_by_type(spectra)
    if not args.json or args.verbose:
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


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    from .plan import PlanConfig, make_plan
    from .rankmap import rankmap_dict, save_rankmap
    from .summary import plan_by_type, plan_grid

    if args.err is None and args.k is None:
        raise WeLoreError("plan needs --err PCT or --k K")
    config = PlanConfig(strategy=args.strategy, err=args.err, k=args.k,
                        normalization=args.normalization, min_ratio=args.min_ratio, search=args.search)
    spectra = _spectra(args)
    plan = make_plan(spectra, config)
    if args.output:
        save_rankmap(plan, Path(args.output))
    t = plan.totals
    if not args.json or args.verbose:
        target = f"target ERR {plan.target_err:g} %, " if plan.target_err is not None else ""
        print(f"model        {plan.model} ({spectra.fingerprint[:16]})\n"
              f"plan         {config.strategy}, {config.normalization}, k = {plan.k:.6g}, {target}"
              f"achieved ERR {plan.achieved_err:.2f} %\n"
              f"partition    {t['lrc']} LRC / {t['nlrc']} N-LRC (reduction > {config.min_ratio:g})\n"
              f"parameters   {t['params_dense'] / 1e6:.2f}M dense -> {t['params_compressed'] / 1e6:.2f}M "
              f"({100 * t['param_ratio']:.1f} %), trainable LRC {t['trainable_params'] / 1e6:.2f}M\n"
              f"bf16 bytes   {t['bytes_dense']['bfloat16'] / 2**20:.0f} MiB -> "
              f"{t['bytes_compressed']['bfloat16'] / 2**20:.0f} MiB; mean relative error {t['mean_rel_error']:.3f}\n")
        print(plan_by_type(plan).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\nreduction % per block (* = LRC)")
        grid = plan_grid(plan, "reduction")
        lrc = plan_grid(plan, "lrc")
        cells = grid.map(lambda v: f"{100 * v:.0f}") + lrc.map(lambda v: "*" if v else " ")
        print(cells.to_string())
        if args.output:
            print(f"\nrank map written to {args.output}")
    return {**rankmap_dict(plan), "output": args.output}


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    from .sources import resolve_model

    source = resolve_model(args.model)
    if not args.json or args.verbose:
        print(f"{source.label}: {source.kind} model ready at {source.path}")
    return {"model": source.label, "kind": source.kind, "path": str(source.path),
            "weight_files": [str(f) for f in source.weight_files]}


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    from .rankmap import missing_layers, plan_from_rankmap, read_rankmap

    data = read_rankmap(Path(args.rankmap))
    spectra = _spectra(args)
    plan = plan_from_rankmap(data, spectra)
    same = data["fingerprint"] == spectra.fingerprint
    dense = missing_layers(data, spectra.layers)
    if not args.json or args.verbose:
        print(f"{args.rankmap}: valid for {spectra.model}: {len(data['layers'])} layers, "
              f"achieved ERR {plan.achieved_err:.2f} %, {plan.totals['lrc']} LRC"
              + ("" if same else " (made on other weights: fingerprints differ)"))
        if dense:
            print(f"note: {len(dense)} model layer(s) not in the map stay dense, e.g. {dense[0]}")
    return {"valid": True, "layers": len(data["layers"]), "same_fingerprint": same, "achieved_err": plan.achieved_err,
            "unlisted_layers": dense, "totals": plan.totals}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="welore", description="WeLore: where an LLM is low-rank, and how to compress it")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("spectra", help="compute (or load from cache) and summarise per-layer singular values")
    _spectra_args(p)
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    p.set_defaults(run=cmd_spectra)
    p = sub.add_parser("plan", help="allocate per-layer ranks and optionally write a rank map")
    _spectra_args(p)
    p.add_argument("--err", type=float, help="target effective rank reduction in percent (30 = 30 %%)")
    p.add_argument("--k", type=float, help="plan at this threshold instead of a target ERR")
    p.add_argument("--strategy", default="welore", choices=["welore", "uniform", "energy"])
    p.add_argument("--min-ratio", type=float, default=0.5, help="reduction above which a layer is an LRC")
    p.add_argument("--normalization", default="minmax", choices=["minmax", "max"])
    p.add_argument("--search", default="exact", choices=["exact", "paper"], help="exact k, or the paper's 0.005 grid")
    p.add_argument("-o", "--output", help="write the rank map JSON here")
    p.set_defaults(run=cmd_plan)
    p = sub.add_parser("prepare", help="resolve a model (converting a GGUF once into cache/models)")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_prepare)
    p = sub.add_parser("validate", help="check a rank map JSON against a model")
    p.add_argument("rankmap")
    _spectra_args(p)
    p.set_defaults(run=cmd_validate)
    for action in sub.choices.values():
        action.add_argument("-v", "--verbose", action="store_true", help="human-readable output even with --json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its warnings are not ours to show; no import here
    try:
        result = args.run(args)
    except (WeLoreError, RankMapError, OSError) as err:
        message = str(err) if isinstance(err, WeLoreError) else f"{type(err).__name__}: {err}"
        print(f"welore: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": message}))
        return 2
    except KeyboardInterrupt:
        print("welore: interrupted (finished layers are cached; run again to resume)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
