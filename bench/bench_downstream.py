"""The paper's Table 5 at this scale (issue 25): fine-tuning only the LRCs of a compressed model against the
N-LRCs, everything and LoRA, on the paper's downstream tasks, with the dense model fine-tuned in full as the
ceiling.

The embedded SmolLM2-135M-Instruct is compressed once at `--err` (WeLore, LRCs factored, N-LRCs dense). Each
task (coin_flip, BoolQ, CommonsenseQA, StrategyQA, SVAMP; the paper's splits, `welore_core.data.downstream`)
is then learnt in every mode with the same steps, schedule, batch and seed; the dense model's full
fine-tune runs beside them. Reported per run: exact-match accuracy on the task's evaluation split before and
after (the first `--eval-examples` examples), trainable parameters, peak memory of the training loop (CPU: peak
RSS; CUDA: max allocated) and tokens/s (training steps only). Runs are recorded in the run registry and written
to `--out` as they finish; a rerun with the same settings measures only the runs not yet in `--out`'s JSON.

The default budget (`--steps 10`, `--eval-examples 60`) is sized for at most an hour on 2 CPU cores: measured,
the whole bench took 40.5 min there (2026-12-07; 40 steps: about 92 min). Ten steps only check the bench; the table in
the docs is `--steps 40`, and a table that separates the modes needs `--steps` in the hundreds (a device run).

    .venv/bin/python bench/bench_downstream.py [--err 50] [--steps 10] [--tasks coin_flip,boolq,...] [--modes lrc,nlrc,full,lora]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import welore_core as wc

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("coin_flip", "boolq", "commonsenseqa", "strategyqa", "svamp")
MODE_ORDER = ("lrc", "nlrc", "full", "lora")


def main(err: float, tasks: list[str], modes: list[str], steps: int, lr: float, seqlen: int, batch: int,
         eval_examples: int, out: Path) -> None:
    settings = {"err": err, "steps": steps, "lr": lr, "seqlen": seqlen, "batch": batch, "eval_examples": eval_examples}
    rows = finished(out, settings)  # a rerun with the same settings keeps the rows already measured
    if rows:
        print(f"{len(rows)} runs finished earlier with these settings: kept from {out.with_suffix('.json')}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "compressed"
        source = wc.resolve_model(None)
        model = wc.load_model(source)
        report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(source), wc.PlanConfig(err=err)))
        wc.save_compressed(model, folder, report, source.path, source.label)
        del model
        print(f"compressed at ERR {err:g} %: {len(report.factored)} LRCs factored, parameters "
              f"{report.params_before / 1e6:.1f}M -> {report.params_after / 1e6:.1f}M", flush=True)
        runs = [(mode, folder, f"ERR {err:g} %") for mode in modes] + [("full", None, "dense")]
        for task in tasks:
            for mode, spec, model_label in runs:
                if any(r["task"] == task and r["mode"] == mode and r["model"] == model_label for r in rows):
                    continue
                began = time.perf_counter()
                config = wc.FinetuneConfig(mode=mode, task=task, steps=steps, seqlen=seqlen, batch_size=batch, lr=lr,
                                           eval_examples=eval_examples, forget_tokens=0, save_every=0, device="cpu")
                result = wc.run_finetune(spec, config, Path(tmp) / f"{task}-{mode}-{model_label.replace(' ', '')}")
                row = {"task": task, "model": model_label, "mode": mode, "accuracy_before": result.accuracy_before,
                       "accuracy_after": result.accuracy_after, "trainable_params": result.trainable_params,
                       "total_params": result.total_params, "peak_memory_mib": result.peak_memory_mib,
                       "tokens_per_s": result.tokens_per_s, "seconds": round(time.perf_counter() - began, 1),
                       "settings": settings}
                rows.append(row)
                print(f"  {task:14s} {model_label:10s} {mode:5s} accuracy {row['accuracy_before']:.3f} -> "
                      f"{row['accuracy_after']:.3f}, {row['trainable_params'] / 1e6:6.2f}M trainable, peak "
                      f"{row['peak_memory_mib']:.0f} MiB, {row['tokens_per_s']:.0f} tokens/s ({row['seconds']:.0f} s)",
                      flush=True)
                write(out, rows, err, steps, lr, seqlen, batch, eval_examples)
    print("\n" + out.with_suffix(".md").read_text())


def finished(out: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier run of this bench measured with `settings` (none when there is no such file)."""
    try:
        rows = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("settings") == settings]


def write(out: Path, rows: list[dict[str, Any]], err: float, steps: int, lr: float, seqlen: int, batch: int,
          eval_examples: int) -> None:
    lines = ["| task | model | mode | accuracy before | accuracy after | trainable | peak memory | tokens/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['model']} | {r['mode']} | {r['accuracy_before']:.3f} | "
                     f"{r['accuracy_after']:.3f} | {r['trainable_params'] / 1e6:.2f}M | {r['peak_memory_mib']:.0f} MiB | "
                     f"{r['tokens_per_s']:.0f} |")
    lines += ["", "Accuracy after fine-tuning, per task (the paper's claim: lrc matches or beats full on the compressed "
              "model):", "", "| task | " + " | ".join(MODE_ORDER) + " | dense full | lrc - full | claim |",
              "|---|" + "---:|" * (len(MODE_ORDER) + 3)]
    for task in dict.fromkeys(r["task"] for r in rows):
        after = {("dense" if r["model"] == "dense" else r["mode"]): r["accuracy_after"] for r in rows if r["task"] == task}
        cells = [f"{after[m]:.3f}" if m in after else "–" for m in MODE_ORDER]
        dense = f"{after['dense']:.3f}" if "dense" in after else "–"
        if "lrc" in after and "full" in after:
            gap = after["lrc"] - after["full"]
            verdict = "holds" if gap >= 0 else "holds within one example" if gap >= -1.0 / eval_examples else "does not hold"
            lines.append(f"| {task} | {' | '.join(cells)} | {dense} | {gap:+.3f} | {verdict} |")
        else:
            lines.append(f"| {task} | {' | '.join(cells)} | {dense} | – | – |")
    notes = [f"Embedded SmolLM2-135M-Instruct compressed at ERR {err:g} % (WeLore, LRCs factored); dense: the "
             f"uncompressed model in full mode. Each run: {steps} steps x {batch} examples (longest {seqlen} tokens), "
             f"lr {lr:g}, cosine, seed 0; accuracy by exact match on the first {eval_examples} evaluation examples.",
             f"Command: `.venv/bin/python bench/bench_downstream.py --err {err:g} --steps {steps} --lr {lr:g} "
             f"--seqlen {seqlen} --batch-size {batch} --eval-examples {eval_examples}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + "\n".join(notes) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--err", type=float, default=50.0)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--modes", default="lrc,nlrc,full,lora")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seqlen", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-examples", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "downstream_table.md",
                        help="the table (.md) and its rows (.json beside it), rewritten as runs finish")
    a = parser.parse_args()
    main(a.err, a.tasks.split(","), a.modes.split(","), a.steps, a.lr, a.seqlen, a.batch_size, a.eval_examples, a.out)
