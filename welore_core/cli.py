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


def _eval_args(p: argparse.ArgumentParser, seqlen: int = 1024) -> None:
    p.add_argument("--data", default="wikitext2", help="wikitext2 (local copy, else hub), c4 (hub) or a text file")
    p.add_argument("--tokens", type=int, help="token budget: evaluate only the first N tokens (whole windows)")
    p.add_argument("--seqlen", type=int, default=seqlen, help="window length in tokens")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda[:N]")


def _eval_config(args: argparse.Namespace) -> Any:
    from .evaluate import EvalConfig

    return EvalConfig(data=args.data, seqlen=args.seqlen, tokens=args.tokens, batch_size=args.batch_size,
                      device=args.device)


def cmd_compress(args: argparse.Namespace) -> dict[str, Any]:
    from .checkpoint import save_compressed
    from .compress import CompressionConfig, collect_grams, compress_model
    from .experiments import Calibration, calibration_batches, load_tokenizer
    from .plan import PlanConfig, make_plan
    from .sources import load_model, resolve_model
    from .rankmap import rankmap_dict, read_rankmap
    from .spectra import compute_spectra

    if (args.rankmap is None) == (args.err is None):
        raise WeLoreError("compress needs exactly one of --rankmap FILE or --err PCT")
    if args.act_svd and not args.calib:
        raise WeLoreError("--act-svd needs --calib PATH (a text file for activation statistics)")
    config = CompressionConfig(mode="all" if args.all_layers else "lrc", act_svd=args.act_svd)
    calib = Calibration(args.calib, args.calib_samples, args.calib_seqlen) if args.act_svd else None
    source = resolve_model(args.model)
    model = load_model(source)
    if args.rankmap:
        data = read_rankmap(Path(args.rankmap))
    else:
        spectra = compute_spectra(source if source.streamable else model, progress=tqdm_progress("spectra"))
        data = rankmap_dict(make_plan(spectra, PlanConfig(strategy=args.strategy, err=args.err)))
    grams = None
    if calib is not None:
        batches, _ = calibration_batches(model, load_tokenizer(source), calib)
        grams = collect_grams(model, batches, [e["name"] for e in data["layers"]], tqdm_progress("calibration"))
    report = compress_model(model, data, config, grams, tqdm_progress("compress"))
    out = save_compressed(model, Path(args.output), data, report, source.path, source.label)
    dtype_bytes = next(model.parameters()).element_size()
    before, after = report.bytes(dtype_bytes)
    if not args.json or args.verbose:
        print(f"{source.label} -> {out} ({report.mode} mode{', ActSVD' if report.act_svd else ''})\n"
              f"factored {len(report.factored)} layers, truncated {len(report.truncated)}; parameters "
              f"{report.params_before / 1e6:.2f}M -> {report.params_after / 1e6:.2f}M "
              f"({100 * report.params_after / report.params_before:.1f} %), {before / 2**20:.0f} MiB -> "
              f"{after / 2**20:.0f} MiB in {next(model.parameters()).dtype}, {report.seconds:.1f} s")
    return {**report.to_dict(), "output": str(out), "bytes_before": before, "bytes_after": after}


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .experiments import evaluate_model

    result = evaluate_model(args.model, _eval_config(args), tqdm_progress("eval"))
    if not args.json or args.verbose:
        note = " (from the run registry)" if result["cached"] else ""
        print(f"{args.data}: PPL {result['ppl']:.4f}, NLL {result['nll']:.4f} over {result['tokens']} tokens "
              f"(seqlen {result['seqlen']}), {result['seconds']:.1f} s, {result['tokens_per_s']:.0f} tokens/s{note}")
    return result


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from .charts import sweep_figure
    from .compress import CompressionConfig
    from .experiments import sweep

    try:
        errs = [float(e) for e in args.errs.split(",") if e.strip()]
    except ValueError:
        raise WeLoreError(f"--errs must be comma-separated percentages, got {args.errs!r}") from None
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    config = CompressionConfig(mode="all" if args.all_layers else "lrc", act_svd=args.act_svd)
    from .experiments import Calibration

    calib = Calibration(args.calib) if args.calib else None
    df = sweep(args.model, errs, strategies, _eval_config(args), config, tqdm_progress("sweep"), calib=calib)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "sweep.csv", index=False)
    (out / "sweep.json").write_text(df.to_json(orient="records", indent=1))
    sweep_figure(df).write_html(out / "sweep.html", include_plotlyjs="cdn")
    if not args.json or args.verbose:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\nwritten: {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.html'}")
    return {"rows": df.to_dict(orient="records"), "output": str(out)}


def cmd_sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from .charts import sensitivity_figure
    from .experiments import sensitivity_of

    result = sensitivity_of(args.model, _eval_config(args), args.ratio, args.by, tqdm_progress("sensitivity"))
    df = pd.DataFrame(result["rows"])
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "sensitivity.csv", index=False)
        sensitivity_figure(df).write_html(out / "sensitivity.html", include_plotlyjs="cdn")
    if not args.json or args.verbose:
        print(df.sort_values("ppl_increase", ascending=False).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return {"rows": df.to_dict(orient="records"), "output": args.output}


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
    p = sub.add_parser("compress", help="apply a rank map (or a fresh plan) and save a compressed model folder")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--rankmap", help="rank map JSON to apply")
    p.add_argument("--err", type=float, help="plan at this ERR instead of reading a rank map")
    p.add_argument("--strategy", default="welore", choices=["welore", "uniform", "energy"])
    p.add_argument("--all-layers", action="store_true", help="every layer at its rank (default: LRCs only)")
    p.add_argument("--act-svd", action="store_true", help="activation-whitened SVD (SVD-LLM) instead of weight SVD")
    p.add_argument("--calib", help="text file for ActSVD calibration")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--calib-seqlen", type=int, default=256)
    p.add_argument("-o", "--output", required=True, help="compressed model folder to write")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_compress)
    p = sub.add_parser("eval", help="perplexity over non-overlapping windows")
    p.add_argument("model", nargs="?", default=None)
    _eval_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_eval)
    p = sub.add_parser("sweep", help="compress + evaluate at several ERRs and strategies")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--errs", default="10,20,30,40,50", help="comma-separated ERR percentages")
    p.add_argument("--strategies", default="welore,uniform", help="comma-separated strategies")
    p.add_argument("--all-layers", action="store_true", help="every layer at its rank (the paper's Table 1 set-up)")
    p.add_argument("--act-svd", action="store_true")
    p.add_argument("--calib", help="text file for ActSVD calibration")
    p.add_argument("-o", "--output", default="out/sweep", help="folder for sweep.csv, sweep.json, sweep.html")
    _eval_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_sweep)
    p = sub.add_parser("sensitivity", help="PPL when one layer type (or layer) at a time is truncated")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--ratio", type=float, default=0.5, help="rank reduction applied to the truncated group")
    p.add_argument("--by", default="type", choices=["type", "layer"])
    p.add_argument("-o", "--output", help="folder for sensitivity.csv and sensitivity.html")
    _eval_args(p, seqlen=512)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_sensitivity)
    from .cli_dynamics import register as register_dynamics

    register_dynamics(sub)
    for action in sub.choices.values():
        action.add_argument("-v", "--verbose", action="store_true", help="human-readable output even with --json")
    from .cli_finetune import register as register_finetune

    register_finetune(sub)  # after the loop: it adds its own -v
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its warnings are not ours to show; no import here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars only: errors stay one line
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
