"""`welore eval | sweep | sensitivity`: perplexity of a model, of compressed models across strategies and ERRs,
and of one truncated layer group at a time."""
from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from ..compression.apply import CompressionConfig
from ..compression.plan import CALIBRATED
from ..errors import WeLoreError
from ..evaluation import (GROUPINGS, EvalConfig, Registry, chart_runs, evaluate_model, perplexity_sweep, sensitivity_of,
                          source_fields)
from ..figures import sensitivity_figure, sweep_figure
from ..figures.html import write_reports
from .common import add_model, add_output, config_from, human, option, output_of, placement_options, tqdm_progress
from .planning import calibration, calibration_options

SENSITIVITY_SEQLEN = 512  # scans run one evaluation per group: shorter windows keep them quick


def eval_options(p: argparse.ArgumentParser, seqlen: int | None = None) -> None:
    option(p, EvalConfig, "data", "a corpus: wikitext2 (local copy, else hub), c4 (hub), tinyshakespeare, "
                                  "hub:NAME[:CONFIG[:SPLIT]] or a text file")
    option(p, EvalConfig, "tokens", "token budget: evaluate only the first N tokens (whole windows)")
    option(p, EvalConfig, "seqlen", "window length in tokens", **({"default": seqlen} if seqlen else {}))
    option(p, EvalConfig, "batch_size", "windows per forward pass")
    placement_options(p, EvalConfig)


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    if args.tasks:
        result = _zeroshot(args)
    else:
        result = evaluate_model(args.model, config_from(EvalConfig, args), tqdm_progress("eval"))
        if human(args):
            note = " (from the run registry)" if result["cached"] else ""
            print(f"{args.data}: PPL {result['ppl']:.4f}, NLL {result['nll']:.4f} over {result['tokens']} tokens "
                  f"(seqlen {result['seqlen']}), {result['seconds']:.1f} s, {result['tokens_per_s']:.0f} tokens/s"
                  f"{note}")
    _refresh_card(args.model)
    return result


def _refresh_card(spec: str | None) -> None:
    """A compressed folder's model card lists every measurement of its weights: rewritten after each (a card the
    user wrote themselves is left alone)."""
    from ..compression.apply.card import write_card
    from ..evaluation import card_measurements
    from ..models import resolve_model

    source = resolve_model(spec)
    if source.kind == "compressed" and (source.path / "config.json").is_file():
        write_card(source.path, card_measurements(source.path))


def _zeroshot(args: argparse.Namespace) -> dict[str, Any]:
    """`eval --tasks`: accuracy through lm-evaluation-harness, one row per task."""
    from ..evaluation.zeroshot import evaluate_tasks

    rows = evaluate_tasks(args.model, _tasks_config(args), tqdm_progress("tasks"))
    if human(args):
        for r in rows:
            norm = "" if r["acc_norm"] is None else f", acc_norm {r['acc_norm']:.4f} ± {r['acc_norm_stderr'] or 0:.4f}"
            note = " (from the run registry)" if r["cached"] else ""
            print(f"{r['task']}: acc {r['acc']:.4f} ± {r['acc_stderr'] or 0:.4f}{norm} over {r['examples']} examples, "
                  f"{r['num_fewshot']}-shot{note}")
    return {"tasks": rows}


def _tasks_config(args: argparse.Namespace) -> Any:
    """The ZeroShotConfig of --tasks, --limit, --num-fewshot and the placement options."""
    from ..evaluation.zeroshot import ZeroShotConfig

    return ZeroShotConfig(tasks=tuple(_items(args.tasks, "tasks")), num_fewshot=args.num_fewshot, limit=args.limit,
                          batch_size=args.batch_size, device=args.device, weights_dtype=args.weights_dtype)


def task_options(p: argparse.ArgumentParser, what: str) -> None:
    """--tasks, --limit and --num-fewshot: accuracy through lm-evaluation-harness."""
    p.add_argument("--tasks", help=f"comma-separated lm-evaluation-harness tasks {what} (boolq and commonsense_qa "
                                   "run offline from $WELORE_DATA; any task by name online)")
    p.add_argument("--limit", type=int, help="--tasks: examples per task (a preview; default: the whole split)")
    p.add_argument("--num-fewshot", type=int, default=0, help="--tasks: in-context examples (default: 0)")


def _numbers(text: str, what: str) -> list[float]:
    items = _items(text, what)
    try:
        return [float(e) for e in items]
    except ValueError:
        raise WeLoreError(f"--{what} must be comma-separated percentages, got {text!r}") from None


def _items(text: str, what: str) -> list[str]:
    """The comma-separated items of --errs, --params or --strategies; an empty one (`30,,40`) is refused, as
    it is more likely a typo than a wish."""
    items = [e.strip() for e in text.split(",")]
    if not text.strip() or any(not e for e in items):
        raise WeLoreError(f"--{what} has an empty item in {text!r}; separate values with single commas")
    return items


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    errs = _numbers(args.errs, "errs")
    params = _numbers(args.params, "params") if args.params else None
    if params and min(params) <= 0:
        raise WeLoreError(f"--params {min(params):g} removes nothing: give percentages of parameters removed, in (0, 100)")
    strategies = _items(args.strategies, "strategies")
    out = output_of(args.output, folder=True, model=args.model)
    mode = "all" if args.all_layers or params else "lrc"  # a parameter budget counts every layer the smaller way
    config = CompressionConfig(mode=mode, act_svd=args.act_svd)
    calibrated = [s for s in strategies if s in CALIBRATED]
    calib = calibration(args, needed=bool(calibrated) or ("greedy" in strategies and bool(args.calib)),
                        what=f"--strategies {calibrated[0]}" if calibrated else "")
    tasks = _tasks_config(args) if args.tasks else None
    df = perplexity_sweep(args.model, errs, strategies, config_from(EvalConfig, args), config, tqdm_progress("sweep"),
                          calib=calib, params=params, tasks=tasks)
    write_reports(out, {"sweep": sweep_figure(df)},
                  {"sweep.csv": df.to_csv(index=False), "sweep.json": df.to_json(orient="records", indent=1)})
    if human(args):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\nwritten: {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.html'}")
    return {"rows": df.to_dict(orient="records"), "output": str(out)}


def cmd_sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    out = output_of(args.output, folder=True, model=args.model)
    result = sensitivity_of(args.model, config_from(EvalConfig, args), args.ratio, args.by,
                            tqdm_progress("sensitivity"))
    df = pd.DataFrame(result["rows"])
    if out is not None:
        write_reports(out, {"sensitivity": sensitivity_figure(df)}, {"sensitivity.csv": df.to_csv(index=False)})
    if human(args):
        print(df.sort_values("ppl_increase", ascending=False).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return {"rows": df.to_dict(orient="records"), "output": args.output}


def cmd_runs(args: argparse.Namespace) -> dict[str, Any]:
    """A model's measurements in the run registry as its charts see them: the dense model, its compressions from
    any path (CLI, sweep, dashboard, fine-tuning), and the rows a chart cannot place, with the reason."""
    from ..models import resolve_model, source_fingerprint

    source = resolve_model(args.model)
    name = str(source_fields(source, source_fingerprint(source))["source_model"] or source.label)
    runs = Registry.default().frame()
    evals = runs[runs["kind"] == "eval"]
    placed, unplaced = chart_runs(evals, name, "err")
    tuned = runs[(runs["kind"] == "finetune") & (runs["source_model"].fillna(runs["model"]) == name)]
    rows = pd.concat([placed.assign(reason=""), unplaced, tuned.assign(reason="")]).sort_values("id")
    columns = ["id", "kind", "origin", "model", "strategy", "target", "mode", "finetuned", "err", "params", "ppl",
               "dataset", "tokens", "reason"]
    table = rows[columns].astype(object).where(rows[columns].notna(), None)
    if human(args):
        if table.empty:
            print(f"{name}: no measurements in {Registry.default().path}")
        else:
            print(f"{name}: {len(placed)} on its charts, {len(unplaced)} not ({len(tuned)} fine-tuning runs)\n")
            print(table.fillna("-").to_string(index=False))
    return {"model": name, "runs": table.to_dict(orient="records")}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="perplexity over non-overlapping windows, or accuracy on harness tasks (--tasks)")
    add_model(p)
    eval_options(p)
    task_options(p, "instead of perplexity")
    add_output(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("sweep", help="compress + evaluate at several ERRs and strategies")
    add_model(p)
    p.add_argument("--errs", default="10,20,30,40,50", help="comma-separated ERR percentages (default: 10,20,30,40,50)")
    p.add_argument("--params", help="comma-separated parameter budgets (percent removed) instead of --errs")
    p.add_argument("--strategies", default="welore,uniform",
                   help="comma-separated strategies: welore, uniform, energy, whitened, greedy, fisher (default: welore,uniform)")
    p.add_argument("--all-layers", action="store_true", help="every layer at its rank (the paper's Table 1 set-up)")
    calibration_options(p)
    p.add_argument("-o", "--output", default="out/sweep", help="folder for sweep.csv, sweep.json, sweep.html")
    eval_options(p)
    task_options(p, "measured at every point beside perplexity")
    add_output(p)
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("runs", help="a model's measurements in the run registry, as its charts see them")
    add_model(p)
    add_output(p)
    p.set_defaults(run=cmd_runs)

    p = sub.add_parser("sensitivity", help="PPL when one layer type (or layer) at a time is truncated")
    add_model(p)
    p.add_argument("--ratio", type=float, default=0.5, help="rank reduction applied to the truncated group")
    p.add_argument("--by", default="type", choices=GROUPINGS)
    p.add_argument("-o", "--output", help="folder for sensitivity.csv and sensitivity.html")
    eval_options(p, seqlen=SENSITIVITY_SEQLEN)
    add_output(p)
    p.set_defaults(run=cmd_sensitivity)
