"""Fine-tuning cost per mode: WeLore's LRC-only training vs N-LRC, full, LoRA and GaLore (Figure 5 / Table 4).

The embedded SmolLM2-135M-Instruct is compressed once at `--err` (LRCs factored, N-LRCs dense); then the
same short continual fine-tuning (same data, seed, schedule, steps) runs in each mode, each in a fresh
process so its peak RSS is its own. Reported per mode: trainable parameters; exact bytes of parameters
+ gradients + optimizer state; peak RSS over the training loop (CPU; CUDA max allocated on a GPU);
held-out and WikiText-2 perplexity before/after; each against `full` measured in the same run.

Throughput is measured apart, in this process, in interleaved rounds: one optimizer step of every mode per
round (same batch for all), best step per mode over `--rounds` after a warm-up round, so that load from
other work on a shared machine hits all modes alike (a per-process figure drifts with the machine's load;
its median is printed in brackets). GaLore's projection SVD happens every 200 steps, i.e. not in rounds.

    .venv/bin/python bench/bench_finetune.py [--err 50] [--steps 8] [--seqlen 128] [--batch-size 4] [--rounds 4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import welore_core as wc
from welore_core.data import sample_windows, split_text
from welore_core.finetune import MODES, FinetuneConfig, build_optimizer, prepare_model, run_finetune
from welore_core.models import load_tokenizer


def child(folder: str, mode: str, settings: str, out: str) -> None:
    """One mode in this (fresh) process; prints its result as JSON."""
    config = FinetuneConfig(mode=mode, **json.loads(settings))
    result = run_finetune(folder, config, Path(out) / mode, registry=wc.Registry(Path(out) / "registry.sqlite"))
    print(json.dumps({k: v for k, v in result.to_dict().items() if k not in ("before", "after")}, default=str))


def compress_embedded(err: float, folder: Path) -> Path:
    source = wc.resolve_model(None)
    model = wc.load_model(source)
    plan = wc.make_plan(wc.compute_spectra(source), wc.PlanConfig(err=err))
    return wc.save_compressed(model, folder, wc.compress_to(model, plan), source.path, source.label)


def interleaved_throughput(folder: Path, modes: list[str], settings: dict[str, Any], rounds: int) -> dict[str, float]:
    """Tokens/s of one optimizer step per mode: best over `rounds` interleaved rounds after a warm-up round."""
    source = wc.resolve_model(folder)
    config = {m: FinetuneConfig(mode=m, **settings) for m in modes}
    train = split_text(load_tokenizer(source), settings["data"], 0.1, settings["seqlen"]).train
    runs = {}
    for mode in modes:
        prepared = prepare_model(wc.load_model(source), config[mode])
        prepared.model.train()
        runs[mode] = (prepared, build_optimizer(prepared, config[mode]))
    best = dict.fromkeys(modes, float("inf"))
    for r in range(rounds + 1):
        x = sample_windows(train, settings["seqlen"], settings["batch_size"], [0, r])  # (B, L), the same for every mode
        for mode, (prepared, optimizer) in runs.items():
            start = time.perf_counter()
            prepared.model(input_ids=x, labels=x, use_cache=False).loss.backward()
            torch.nn.utils.clip_grad_norm_(list(prepared.trainable.values()), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if r:  # round 0 warms up (allocation, GaLore's first projection)
                best[mode] = min(best[mode], time.perf_counter() - start)
    return {mode: x.numel() / seconds for mode, seconds in best.items()}


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:5.2f}x" if value and base else "    -"


def main(err: float, modes: list[str], settings: dict[str, Any], rounds: int) -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = compress_embedded(err, Path(tmp) / f"smollm2-err{err:g}")
        manifest = json.loads((folder / "welore-manifest.json").read_text())
        print(f"compressed at ERR {err:g} % in {time.perf_counter() - start:.0f} s: {len(manifest['factored'])} LRCs, "
              f"{manifest['params_before'] / 1e6:.1f}M -> {manifest['params_after'] / 1e6:.1f}M parameters",
              flush=True)
        for mode in modes:
            began = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", str(folder), mode, json.dumps(settings), tmp],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {mode}: {time.perf_counter() - began:.0f} s", flush=True)
        began = time.perf_counter()
        speed = interleaved_throughput(folder, modes, settings, rounds)
        print(f"  throughput, {rounds} interleaved rounds: {time.perf_counter() - began:.0f} s", flush=True)
    tokens_per_step = settings["batch_size"] * settings["seqlen"]
    for r in rows:
        r["steady_tokens_per_s"] = speed[r["mode"]]
        r["median_tokens_per_s"] = tokens_per_step / statistics.median(r["step_seconds"][1:] or r["step_seconds"])
    base = next((r for r in rows if r["mode"] == "full"), rows[0])
    print(f"\nSmolLM2-135M-Instruct at ERR {err:g} % (LRC-factored), float32, {rows[0]['device']}, "
          f"{torch.get_num_threads()} threads; {settings['steps']} steps x {settings['batch_size']} x "
          f"{settings['seqlen']} tokens of {Path(settings['data']).name}, lr {settings['lr']:g}; "
          f"ratios vs {base['mode']}\n")
    print("| mode | trainable | ratio | params+grads+optim MiB | ratio | peak RSS MiB | ratio | tokens/s | ratio | "
          "(in-run median) | held-out PPL before -> after | WikiText-2 PPL after | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['trainable_params'] / 1e6:.2f}M "
              f"| {ratio(r['trainable_params'], base['trainable_params'])} "
              f"| {r['state_mib']:.0f} | {ratio(r['state_mib'], base['state_mib'])} "
              f"| {r['peak_memory_mib']:.0f} | {ratio(r['peak_memory_mib'], base['peak_memory_mib'])} "
              f"| {r['steady_tokens_per_s']:.0f} | {ratio(r['steady_tokens_per_s'], base['steady_tokens_per_s'])} "
              f"| ({r['median_tokens_per_s']:.0f}) "
              f"| {r['heldout_ppl_before']:.2f} -> {r['heldout_ppl_after']:.2f} "
              f"| {r['wikitext_ppl_after']:.2f} | {r['final_loss']:.3f} |")
    print(f"\nWikiText-2 PPL before: {rows[0]['wikitext_ppl_before']:.2f}; "
          f"peak memory: {rows[0]['peak_memory_kind']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("FOLDER", "MODE", "SETTINGS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--err", type=float, default=50.0, help="ERR (%%) the embedded model is compressed at")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--data", default=str(wc.data_dir() / "tinyshakespeare" / "input.txt"))
    parser.add_argument("--eval-tokens", type=int, default=1024)
    parser.add_argument("--forget-tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved throughput rounds after a warm-up")
    a = parser.parse_args()
    if a.child:
        child(*a.child)
    else:
        main(a.err, [m.strip() for m in a.modes.split(",")],
             {"data": a.data, "steps": a.steps, "seqlen": a.seqlen, "batch_size": a.batch_size, "lr": a.lr,
              "eval_tokens": a.eval_tokens, "forget_tokens": a.forget_tokens, "save_every": 0}, a.rounds)
