"""Recovery after compression (issue 25): the closed-form update, distillation from the dense model, and both,
on the best compression of the budget table (fisher + ActSVD), at 5, 10 and 20 % of parameters removed.

Protocol as `bench_budget.py` (its rows are the baseline here): WikiText-2 test perplexity over the first
`--tokens` tokens in windows of `--seqlen`; calibration (ActSVD, fisher, the update) is 16 x 256 tokens of
tiny-shakespeare; training (LM fine-tuning and distillation) is tiny-shakespeare too. Nothing from the WikiText-2
test set goes into calibration or training. Rows, at each budget:

    fisher + ActSVD                          (the budget table's best, no training)
    + update                                 (compress --act-svd --update)
    + LRC fine-tuning, LM loss (N steps)     (with --lm-reference: the budget table's recovery)
    + distillation (N steps)                 (finetune --distill, same steps, data and schedule)
    + update + distillation (N steps)

Compressions are recorded in the run registry, so a rerun only trains.

    .venv/bin/python bench/bench_recovery.py [--budgets 5,10,20] [--steps 100] [--mode lrc] [--lr 3e-4]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import welore_core as wc
from welore_core.compression.spectra import calibrated_fisher, calibrated_spectra, calibration_batches
from welore_core.evaluation import evaluate_point, load_for_eval, token_ids
from welore_core.finetune import MODES

ROOT = Path(__file__).resolve().parent.parent


def main(budgets: list[float], tokens: int, seqlen: int, steps: int, lr: float, mode: str, temperature: float,
         out: Path, train_budgets: list[float], lm_reference: bool) -> None:
    shakespeare = str(wc.data_dir() / "tinyshakespeare" / "input.txt")
    config = wc.EvalConfig(tokens=tokens, seqlen=seqlen, device="cpu")
    registry = wc.Registry.default()
    loaded = load_for_eval(None, "cpu", config)
    ids, data_hash = token_ids(loaded, config)
    spectra = wc.compute_spectra(loaded.source)
    calib = wc.Calibration(shakespeare)
    whitened, grams, digest = calibrated_spectra(loaded.model, loaded.tokenizer, calib, like=spectra)
    fisher = calibrated_fisher(loaded.model, loaded.tokenizer, calib, whitened)
    batches, _ = calibration_batches(loaded.model, loaded.tokenizer, calib)
    dense, _ = evaluate_point(loaded, ids, data_hash, None, wc.CompressionConfig(mode="all"), config, registry,
                              origin="bench")
    print(f"dense: PPL {dense['ppl']:.2f}", flush=True)
    rows: list[dict[str, Any]] = [{"row": "dense", **{b: dense["ppl"] for b in budgets}}]
    cells: dict[str, dict[float, float]] = {}
    seconds: dict[str, dict[float, float]] = {}

    def put(label: str, pct: float, ppl: float, began: float) -> None:
        cells.setdefault(label, {})[pct] = ppl
        seconds.setdefault(label, {})[pct] = round(time.perf_counter() - began, 1)
        print(f"  {label:48s} {pct:4g} %: PPL {ppl:9.2f} ({seconds[label][pct]:.0f} s)", flush=True)
        write(out, budgets, dense["ppl"], rows + [{"row": k, **v, "seconds": seconds[k]} for k, v in cells.items()],
              tokens, seqlen, steps, lr, mode, temperature, train_budgets, lm_reference)

    base = wc.CompressionConfig(mode="all", act_svd=True)
    for pct in budgets:
        plan = wc.make_plan(fisher, wc.PlanConfig(strategy="fisher", params=pct))
        for label, compression in (("fisher + ActSVD", base), ("fisher + ActSVD + update", replace(base, update=True))):
            began = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "compressed"
                result, _ = evaluate_point(loaded, ids, data_hash, plan, compression, config, registry, grams,
                                           compression.identity(calib, digest), save_to=folder, batches=batches,
                                           origin="bench")
                put(label, pct, result["ppl"], began)
                trainings = [(f"{label} + distillation ({steps} steps)", True)] if pct in train_budgets else []
                if not compression.update and lm_reference and pct in train_budgets:
                    trainings.insert(0, (f"{label} + LRC fine-tuning, LM loss ({steps} steps)", False))
                for name, distil in trainings:
                    began = time.perf_counter()
                    ft = wc.FinetuneConfig(mode=mode if distil else "lrc", data=shakespeare, steps=steps, seqlen=256,
                                           batch_size=4, lr=lr, eval_tokens=1024, forget_tokens=0, save_every=0,
                                           device="cpu", distill=distil,
                                           temperature=temperature if distil else 1.0)
                    wc.run_finetune(folder, ft, Path(tmp) / "tuned")
                    put(name, pct, wc.evaluate_model(Path(tmp) / "tuned", config)["ppl"], began)
    print("\n" + (out.with_suffix(".md")).read_text())


def write(out: Path, budgets: list[float], dense: float, rows: list[dict[str, Any]], tokens: int, seqlen: int,
          steps: int, lr: float, mode: str, temperature: float, train_budgets: list[float], lm_reference: bool) -> None:
    lines = ["| | " + " | ".join(f"{b:g} % removed" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for r in rows:
        lines.append(f"| {r['row']} | " + " | ".join(f"{r[b]:.2f} ({r[b] / dense:.2f}x)" if r.get(b) is not None
                                                     else "-" for b in budgets) + " |")
    notes = [f"WikiText-2 test PPL, first {tokens} tokens in windows of {seqlen} (x: times dense, {dense:.2f}). "
             "Calibration: 16 x 256 tokens of tiny-shakespeare. Training: tiny-shakespeare, "
             f"{steps} steps x 4 x 256 tokens, lr {lr:g}, cosine; LM fine-tuning trains the LRC factors; distillation "
             f"trains in {mode} mode against the dense model, temperature {temperature:g}, KL only (alpha 0).",
             "Command: `.venv/bin/python bench/bench_recovery.py --budgets "
             f"{','.join(f'{b:g}' for b in budgets)} --tokens {tokens} --seqlen {seqlen} --steps {steps} --lr {lr:g} "
             f"--mode {mode} --temperature {temperature:g} --train-budgets "
             f"{','.join(f'{b:g}' for b in train_budgets) or 'none'}{' --lm-reference' if lm_reference else ''}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + "\n".join(notes) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5,10,20")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--mode", default="lrc", choices=MODES, help="what distillation trains")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--train-budgets", default=None, help="budgets with training rows (default: every budget; "
                                                              "'none' for the training-free rows alone)")
    parser.add_argument("--lm-reference", action="store_true",
                        help="also LRC fine-tuning with the LM loss (the budget table's recovery row)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "recovery_table.md",
                        help="the table (.md) and its rows (.json beside it), rewritten as rows finish")
    a = parser.parse_args()
    budgets = [float(b) for b in a.budgets.split(",")]
    trained = budgets if a.train_budgets is None else [] if a.train_budgets == "none" else \
        [float(b) for b in a.train_budgets.split(",")]
    main(budgets, a.tokens, a.seqlen, a.steps, a.lr, a.mode, a.temperature, a.out, trained, a.lm_reference)
