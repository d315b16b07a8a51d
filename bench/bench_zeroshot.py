"""Zero-shot accuracy of compressed models (issue 24): the embedded model dense and compressed, on BoolQ and
CommonsenseQA through lm-evaluation-harness, with the harness's own prompts and metric, from the local dev files.

Rows: dense; welore, uniform and fisher + ActSVD at 10 and 20 % of parameters removed (every layer stored the
smaller way); welore at ERR 30 and 50 % (LRCs factored, the paper's set-up). Columns: accuracy ± stderr per task,
examples counted, parameters, seconds. Every row is a registry row, so a rerun prints from the registry, and a
task stopped part-way (Ctrl-C, a session's end) resumes from the requests the harness had already answered
(its request cache under `cache/harness-requests/`): the whole dev sets can be run in parts
(measured: about 20 min a row, 3 h for the nine, on the 2-core CPU machine).
Calibration for ActSVD and fisher is tiny-shakespeare, never the evaluation data. `--limit N` previews on the
first N examples of each task; without it the whole dev sets run.

    .venv/bin/python bench/bench_zeroshot.py [--tasks boolq,commonsense_qa] [--limit N] [--out docs/zeroshot_table.json]

The dense row by the harness's own command line, on the folder `welore prepare` converts the embedded model to
and the task files this script prints, gives the same numbers:

    python -m lm_eval --model hf --model_args pretrained=cache/models/SmolLM2-135M-Instruct,dtype=float32 \\
        --tasks boolq,commonsense_qa --include_path cache/harness-tasks/<id> --batch_size 8 --device cpu
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import welore_core as wc
from welore_core.compression.plan import DATA_AWARE
from welore_core.compression.spectra import calibrated_fisher, calibrated_spectra
from welore_core.evaluation import load_for_eval, point_tasks
from welore_core.evaluation.zeroshot import local_tasks

ROOT = Path(__file__).resolve().parent.parent
ROWS: tuple[tuple[str, str, float, bool], ...] = (  # (strategy, target, value, ActSVD)
    ("welore", "params", 10.0, False), ("welore", "params", 20.0, False), ("uniform", "params", 10.0, False),
    ("uniform", "params", 20.0, False), ("fisher", "params", 10.0, True), ("fisher", "params", 20.0, True),
    ("welore", "err", 30.0, False), ("welore", "err", 50.0, False))


def main(tasks: tuple[str, ...], limit: int | None, batch_size: int, out: Path | None, device: str) -> None:
    config = wc.ZeroShotConfig(tasks=tasks, limit=limit, batch_size=batch_size, device=device,
                               weights_dtype="float32")
    registry = wc.Registry.default()
    loaded = load_for_eval(None, device)
    print(f"task files: {local_tasks()[0]}", flush=True)
    spectra = wc.compute_spectra(loaded.source)
    calib = wc.Calibration(str(wc.data_dir() / "tinyshakespeare" / "input.txt"))
    whitened, grams, digest = calibrated_spectra(loaded.model, loaded.tokenizer, calib, like=spectra)
    bases = {"fisher": calibrated_fisher(loaded.model, loaded.tokenizer, calib, whitened)}
    rows: list[dict[str, Any]] = []

    def measure(label: str, plan: wc.RankPlan | None, compression: wc.CompressionConfig) -> None:
        start = time.perf_counter()
        extra = compression.identity(calib, digest)
        accuracy = point_tasks(loaded, plan, compression, grams if compression.act_svd else None, extra, config,
                               registry, origin="bench")
        row = {"row": label, "params_removed_pct": plan.totals.params_removed_pct if plan else 0.0,
               "achieved_err": plan.achieved_err if plan else 0.0, **accuracy,
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        cells = "  ".join(f"{t} {row[f'acc_{t}']:.4f} ± {row[f'acc_stderr_{t}']:.4f}" for t in tasks)
        print(f"{label:34s} {cells}  ({row['seconds']:.0f} s)", flush=True)
        if out is not None:
            out.write_text(json.dumps({"tasks": list(tasks), "limit": limit, "rows": rows}, indent=1) + "\n")

    measure("dense", None, wc.CompressionConfig(mode="all"))
    for strategy, target, value, act in ROWS:
        basis = bases.get(strategy, whitened) if strategy in DATA_AWARE else spectra
        plan = wc.make_plan(basis, wc.PlanConfig(strategy=strategy, **{target: value}))
        mode = "all" if target == "params" else "lrc"
        label = (f"{strategy}{' + ActSVD' if act else ''}, {value:g} % "
                 f"{'params removed' if target == 'params' else 'ERR'} ({mode})")
        measure(label, plan, wc.CompressionConfig(mode=mode, act_svd=act))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="boolq,commonsense_qa")
    parser.add_argument("--limit", type=int, default=None, help="examples per task (default: the whole dev set)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here, as they finish")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the whole dev sets take about 40 min a row on "
                                                        "2 CPU cores, resumable; the model is evaluated in float32 either way)")
    args = parser.parse_args()
    main(tuple(t.strip() for t in args.tasks.split(",")), args.limit, args.batch_size, args.out, args.device)
