"""Compressions users can keep (issue 15): every strategy at the same parameter budget, before and after recovery.

Rows: dense, then uniform, welore, energy, whitened, greedy and fisher, each with weight SVD and with ActSVD;
after N steps of LRC fine-tuning, the best of them at each budget, WeLore + ActSVD at each budget and WeLore +
weight SVD (the paper's method) at 10 % (fine-tuning all 36 combinations would take hours on two CPU cores;
`--finetune all` does it).
Columns: 5, 10 and 20 % of the analysed layers' parameters removed (the peers' convention: every layer
stored the smaller way). Metric: WikiText-2 test perplexity over a fixed token budget. Calibration (ActSVD,
whitened spectra) and fine-tuning use tiny-shakespeare, never the evaluation text. Compressions are
recorded in the run registry, so a rerun only fine-tunes.

    .venv/bin/python bench/bench_budget.py [--budgets 5,10,20] [--tokens 8192] [--steps 30]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import welore_core as wc
from welore_core.compression.plan import DATA_AWARE
from welore_core.compression.spectra import calibrated_fisher, calibrated_spectra
from welore_core.evaluation import evaluate_point, load_for_eval, token_ids

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("uniform", "welore", "energy", "whitened", "greedy", "fisher")


def main(budgets: list[float], tokens: int, seqlen: int, steps: int, lr: float, finetune: str) -> None:
    shakespeare = str(wc.data_dir() / "tinyshakespeare" / "input.txt")
    config = wc.EvalConfig(tokens=tokens, seqlen=seqlen, device="cpu")
    registry = wc.Registry.default()
    loaded = load_for_eval(None, "cpu", config)
    ids, data_hash = token_ids(loaded, config)
    spectra = wc.compute_spectra(loaded.source)
    calib = wc.Calibration(shakespeare)
    whitened, grams, digest = calibrated_spectra(loaded.model, loaded.tokenizer, calib, like=spectra)
    bases = {"whitened": whitened, "greedy": whitened,
             "fisher": calibrated_fisher(loaded.model, loaded.tokenizer, calib, whitened)}
    dense, _ = evaluate_point(loaded, ids, data_hash, None, wc.CompressionConfig(mode="all"), config, registry)
    rows = [{"row": "dense", "params": dense["params"], **{b: dense["ppl"] for b in budgets}}]
    print(f"dense: PPL {dense['ppl']:.2f}, {dense['params'] / 1e6:.1f}M parameters", flush=True)
    plans = {}
    for act in (False, True):  # phase 1: every strategy at every budget, no training
        compression = wc.CompressionConfig(mode="all", act_svd=act)
        for strategy in STRATEGIES:
            basis = bases[strategy] if strategy in DATA_AWARE else spectra
            label = f"{strategy} + {'ActSVD' if act else 'weight SVD'}"
            row: dict = {"row": label}  # type: ignore[type-arg]
            for pct in budgets:
                start = time.perf_counter()
                plan = wc.make_plan(basis, wc.PlanConfig(strategy=strategy, params=pct))
                plans[(label, pct)] = (plan, compression)
                result, _ = evaluate_point(loaded, ids, data_hash, plan, compression, config, registry,
                                           grams if act else None, compression.identity(calib, digest))
                row[pct], row["params"] = result["ppl"], result["params"]
                print(f"  {label:28s} {pct:4g} %: PPL {row[pct]:12.2f} ({plan.totals.params_removed_pct:.2f} % "
                      f"removed, {time.perf_counter() - start:.0f} s)", flush=True)
            rows.append(row)
    chosen = {(r["row"], b) for r in rows[1:] for b in budgets} if finetune == "all" else set()
    for b in budgets:  # phase 2: recovery of the best at each budget and of WeLore + ActSVD; the paper's at 10 %
        best = min(rows[1:], key=lambda r: r[b])["row"]
        chosen |= {(best, b), ("welore + ActSVD", b)} | ({("welore + weight SVD", b)} if b == 10 else set())
    tuned: dict[str, dict] = {}  # type: ignore[type-arg]
    for label, pct in sorted(chosen, key=lambda x: (x[1], x[0])):
        start = time.perf_counter()
        plan, compression = plans[(label, pct)]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "compressed"
            evaluate_point(loaded, ids, data_hash, plan, compression, config, registry,
                           grams if compression.act_svd else None, compression.identity(calib, digest), save_to=folder)
            ft = wc.FinetuneConfig(mode="lrc", data=shakespeare, steps=steps, seqlen=256, batch_size=4, lr=lr,
                                   eval_tokens=1024, forget_tokens=0, save_every=0, device="cpu")
            wc.run_finetune(folder, ft, Path(tmp) / "tuned")
            ppl = wc.evaluate_model(Path(tmp) / "tuned", config)["ppl"]
        tuned.setdefault(label, {"row": f"{label} + LRC fine-tuning ({steps} steps)"})[pct] = ppl
        print(f"  {label:28s} {pct:4g} %: after fine-tuning PPL {ppl:10.2f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    rows += list(tuned.values())
    table = render(rows, budgets, dense["ppl"], tokens, seqlen, steps, lr)
    print("\n" + table)
    (ROOT / "docs" / "budget_table.md").write_text(table + "\n")
    (ROOT / "docs" / "budget_table.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


def render(rows: list[dict], budgets: list[float], dense: float, tokens: int, seqlen: int, steps: int,  # type: ignore[type-arg]
           lr: float) -> str:
    head = "| | " + " | ".join(f"{b:g} % removed" for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * len(budgets)]
    for r in rows:
        cells = " | ".join(f"{r[b]:.2f}" if r.get(b) is not None else "-" for b in budgets)
        lines.append(f"| {r['row']} | {cells} |")
    best = {b: min((r for r in rows[1:] if "fine-tuning" not in r["row"]), key=lambda r: r[b]) for b in budgets}
    ref = {b: next(r for r in rows if r["row"] == "welore + ActSVD")[b] for b in budgets}
    notes = [f"WikiText-2 test PPL, first {tokens} tokens in windows of {seqlen}; dense {dense:.2f}. Calibration: "
             "16 x 256 tokens of tiny-shakespeare; fine-tuning: LRC factors only, tiny-shakespeare, "
             f"{steps} steps x 4 x 256 tokens, lr {lr:g}.",
             "Best without training: " + "; ".join(f"{b:g} %: {best[b]['row']} {best[b][b]:.2f} "
                                                    f"({ref[b] / best[b][b]:.2f}x lower than welore + ActSVD)"
                                                    for b in budgets),
             "Command: `.venv/bin/python bench/bench_budget.py --budgets "
             f"{','.join(f'{b:g}' for b in budgets)} --tokens {tokens} --seqlen {seqlen} --steps {steps} --lr {lr:g}`"]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5,10,20")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--finetune", default="selected", choices=["selected", "all"],
                        help="fine-tune the best and WeLore's rows at each budget (selected), or every row (all)")
    a = parser.parse_args()
    main([float(b) for b in a.budgets.split(",")], a.tokens, a.seqlen, a.steps, a.lr, a.finetune)
