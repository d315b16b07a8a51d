"""Recovery after compression (issue 25): calibration on text the model writes itself, the closed-form update, and
distillation from the dense model, on the best compression of the budget table (fisher + ActSVD), at 5, 10 and 20 %
of parameters removed.

Protocol as `bench_budget.py` (its rows are the reference here): WikiText-2 test perplexity over the first
`--tokens` tokens in windows of `--seqlen`. The calibrations feeding the fisher scores, ActSVD and the update:
  tiny-shakespeare   16 windows x 256 tokens (the budget table's), and `--calib-samples` windows (no update row:
                     it separates what the text changes from what more windows change)
  samples            `--calib-samples` windows x 256 tokens of text the dense model wrote itself (`welore sample`:
                     `--sample-docs` documents x 256 tokens, from its beginning-of-text token, temperature 1)
Distillation (KL to the dense model, `--mode` trains) reads the samples too. Nothing from WikiText-2 goes into
calibration or training. Rows, at each budget:

    fisher + ActSVD                               (each calibration)
    + update                                      (compress --act-svd --update; each calibration)
    + distillation (N steps; at --train-budgets)  from the better of the two rows on the samples, or from the
                                                  plain one, the updated one, or each (--distill-from)

Compressions are recorded in the run registry, and distillation rows in the table's JSON with the settings that
made them, so a rerun with the same settings trains nothing it has already trained.

    .venv/bin/python bench/bench_recovery.py [--budgets 5,10,20] [--steps 60] [--mode lrc] [--lr 3e-4]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import welore_core as wc
from welore_core.compression.spectra import calibrated_fisher, calibrated_spectra, calibration_batches
from welore_core.evaluation import evaluate_point, load_for_eval, token_ids
from welore_core.finetune import MODES

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    budgets: list[float]
    tokens: int  # WikiText-2 test tokens evaluated
    seqlen: int  # evaluation window
    steps: int  # distillation steps (x 4 x 256 tokens)
    lr: float
    mode: str  # what distillation trains
    temperature: float
    train_budgets: list[float]
    calib_samples: int  # calibration windows of the samples
    sample_docs: int  # documents sampled from the dense model
    distill_from: str  # "best": the better training-free row on the samples; "plain", "update", or "both"
    out: Path


def main(s: Settings) -> None:
    config = wc.EvalConfig(tokens=s.tokens, seqlen=s.seqlen, device="cpu")
    registry = wc.Registry.default()
    began = time.perf_counter()
    samples = wc.sample_from(None, wc.SampleConfig(sequences=s.sample_docs), progress=None)
    print(f"samples: {samples.path} ({samples.documents} documents, "
          f"{'reused' if samples.reused else f'{time.perf_counter() - began:.0f} s'})", flush=True)
    loaded = load_for_eval(None, "cpu", config)
    ids, data_hash = token_ids(loaded, config)
    spectra = wc.compute_spectra(loaded.source)
    dense, _ = evaluate_point(loaded, ids, data_hash, None, wc.CompressionConfig(mode="all"), config, registry,
                              origin="bench")
    print(f"dense: PPL {dense['ppl']:.2f}", flush=True)
    rows: dict[str, dict[str, Any]] = {"dense": {b: dense["ppl"] for b in s.budgets}}
    trained = _trained(s, samples.path)

    def put(label: str, pct: float, ppl: float, since: float, seconds: float | None = None) -> None:
        row = rows.setdefault(label, {"seconds": {}})
        row[pct] = ppl
        row["seconds"][pct] = round(time.perf_counter() - since, 1) if seconds is None else seconds
        print(f"  {label:58s} {pct:4g} %: PPL {ppl:9.2f} ({row['seconds'][pct]:.0f} s)", flush=True)
        kept = {k: {**{b: v[0] for b, v in cells.items()}, "seconds": {b: v[1] for b, v in cells.items()}}
                for k, cells in trained.items() if k not in rows}  # rows of other --distill-from runs stay
        write(s, dense["ppl"], {**rows, **kept}, samples.path)

    shakespeare = str(wc.data_dir() / "tinyshakespeare" / "input.txt")
    calibrations = [(f"tiny-shakespeare, {n} windows", wc.Calibration(shakespeare, samples=n), n == 16)
                    for n in sorted({16, s.calib_samples})]
    calibrations.append((f"samples, {s.calib_samples} windows",
                         wc.Calibration(str(samples.path), samples=s.calib_samples), True))
    base = wc.CompressionConfig(mode="all", act_svd=True)
    for name, calib, with_update in calibrations:
        whitened, grams, digest = calibrated_spectra(loaded.model, loaded.tokenizer, calib, like=spectra)
        fisher = calibrated_fisher(loaded.model, loaded.tokenizer, calib, whitened)
        batches, _ = calibration_batches(loaded.model, loaded.tokenizer, calib)
        for pct in s.budgets:
            plan = wc.make_plan(fisher, wc.PlanConfig(strategy="fisher", params=pct))
            tried = []
            variants = [(f"fisher + ActSVD ({name})", base)]
            if with_update:
                variants.append((f"fisher + ActSVD + update ({name})", replace(base, update=True)))
            for label, compression in variants:
                since = time.perf_counter()
                result, _ = evaluate_point(loaded, ids, data_hash, plan, compression, config, registry, grams,
                                           compression.identity(calib, digest), batches=batches, origin="bench")
                put(label, pct, result["ppl"], since)
                tried.append((result["ppl"], compression))
            if not name.startswith("samples") or pct not in s.train_budgets:
                continue
            starts = ([min(tried, key=lambda t: t[0])] if s.distill_from == "best" else tried if s.distill_from == "both"
                      else [t for t in tried if t[1].update == (s.distill_from == "update")])
            for _, start in starts:
                since = time.perf_counter()
                label = ("best of the two on samples" if s.distill_from == "best" else
                         "fisher + ActSVD" + (" + update" if start.update else "") + " (samples)")
                label = f"{label} + distillation ({s.steps} steps)"
                if pct in trained.get(label, {}):  # trained before with these settings
                    ppl, seconds = trained[label][pct]
                    put(label, pct, ppl, since, seconds)
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp) / "compressed"
                    evaluate_point(loaded, ids, data_hash, plan, start, config, registry, grams,
                                   start.identity(calib, digest), save_to=folder, batches=batches, origin="bench")
                    ft = wc.FinetuneConfig(mode=s.mode, data=str(samples.path), steps=s.steps, seqlen=256,
                                           batch_size=4, lr=s.lr, eval_tokens=1024, forget_tokens=0, save_every=0,
                                           device="cpu", distill=True, temperature=s.temperature)
                    wc.run_finetune(folder, ft, Path(tmp) / "tuned")
                    put(label, pct, wc.evaluate_model(Path(tmp) / "tuned", config)["ppl"], since)
    print("\n" + s.out.with_suffix(".md").read_text())


def _identity(s: Settings, samples: Path) -> dict[str, Any]:
    """What a distillation row depends on (not which budgets a run covers)."""
    return {"tokens": s.tokens, "seqlen": s.seqlen, "steps": s.steps, "lr": s.lr, "mode": s.mode,
            "temperature": s.temperature, "calib_samples": s.calib_samples, "samples": samples.name}


def _trained(s: Settings, samples: Path) -> dict[str, dict[float, tuple[float, float]]]:
    """Distillation rows of an earlier run with the same settings: label -> budget -> (PPL, seconds)."""
    path = s.out.with_suffix(".json")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("settings") != _identity(s, samples):
        return {}
    return {r["row"]: {float(b): (float(v), float(r.get("seconds", {}).get(b, 0.0))) for b, v in r.items()
                       if b not in ("row", "seconds")}
            for r in saved.get("rows", []) if "distillation" in r["row"]}


def write(s: Settings, dense: float, rows: dict[str, dict[str, Any]], samples: Path) -> None:
    budgets = sorted(s.budgets)
    lines = ["| | " + " | ".join(f"{b:g} % removed" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{r[b]:.2f} ({r[b] / dense:.2f}x)" if r.get(b) is not None
                                                  else "-" for b in budgets) + " |")
    notes = [f"WikiText-2 test PPL, first {s.tokens} tokens in windows of {s.seqlen} (x: times dense, {dense:.2f}). "
             f"Calibration: 16 or {s.calib_samples} windows x 256 tokens of tiny-shakespeare, or "
             f"{s.calib_samples} x 256 tokens of {s.sample_docs} documents the dense model sampled itself "
             f"(`welore sample --sequences {s.sample_docs}`: {samples.name}). Distillation: the samples, "
             f"{s.steps} steps x 4 x 256 tokens, lr {s.lr:g}, cosine, {s.mode} mode, KL to the dense model at "
             f"temperature {s.temperature:g} (alpha 0), from the training-free row each names (\"best of the two\": the "
             "better of the two on the samples). Distillation rows of earlier runs with other --distill-from are kept.",
             "Command: `.venv/bin/python bench/bench_recovery.py --budgets "
             f"{','.join(f'{b:g}' for b in s.budgets)} --tokens {s.tokens} --seqlen {s.seqlen} --steps {s.steps} "
             f"--lr {s.lr:g} --mode {s.mode} --temperature {s.temperature:g} --calib-samples {s.calib_samples} "
             f"--sample-docs {s.sample_docs} --train-budgets {','.join(f'{b:g}' for b in s.train_budgets) or 'none'} "
             f"--distill-from {s.distill_from}`"]
    s.out.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + "\n".join(notes) + "\n")
    saved = {"settings": _identity(s, samples), "rows": [{"row": k, **v} for k, v in rows.items()]}
    s.out.with_suffix(".json").write_text(json.dumps(saved, indent=1, default=str) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5,10,20")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--mode", default="lrc", choices=MODES, help="what distillation trains")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--calib-samples", type=int, default=64, help="calibration windows of the model's samples")
    parser.add_argument("--sample-docs", type=int, default=128, help="documents sampled from the dense model")
    parser.add_argument("--distill-from", default="best", choices=("best", "plain", "update", "both"),
                        help="distil the better training-free row on the samples, the plain or the updated one, or "
                             "each (twice the training time)")
    parser.add_argument("--train-budgets", default=None, help="budgets with a distillation row (default: every "
                                                              "budget; 'none' for the training-free rows alone)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "recovery_table.md",
                        help="the table (.md) and its rows (.json beside it), rewritten as rows finish")
    a = parser.parse_args()
    chosen = [float(b) for b in a.budgets.split(",")]
    trained = chosen if a.train_budgets is None else [] if a.train_budgets == "none" else \
        [float(b) for b in a.train_budgets.split(",")]
    main(Settings(chosen, a.tokens, a.seqlen, a.steps, a.lr, a.mode, a.temperature, trained, a.calib_samples,
                  a.sample_docs, a.distill_from, a.out))
