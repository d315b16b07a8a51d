"""What compression buys at inference (issue 26): prefill latency, decode tokens/s and peak memory, dense against
compressed SmolLM2-135M, each beside its parameter ratio.

Variants: dense; WeLore at ERR 30/50/70 % with the LRCs factored (`lrc`, the paper's checkpoint) and with every
layer at its rank stored the smaller way (`all`, the paper's compression tables); fisher + ActSVD at 10 and 20 %
of parameters removed (the budget table's best compression). Every variant is saved as a folder and loaded back
the way a user loads it.

- prefill: one forward of 1 x `--seqlen` tokens, no cache.
- decode: greedy steps with the KV cache after a 64-token prompt, `--new-tokens` steps at batch 1 and at batch 8;
  tokens/s counts every sequence of the batch. The prompt's prefill is not timed.
- Both are the best of `--repeats` rounds, measured in interleaved rounds (every variant once per round) in this
  one process, so machine drift hits all variants alike.
- peak memory: a fresh process loads the folder, runs the prefill and the batch-8 decode; CPU: its peak RSS
  (VmHWM, torch and the runtime included), CUDA: torch.cuda.max_memory_allocated.

The goal (issue 26): at ERR 50 % all-layers, the decode speed-up is at least 0.9 x the parameter reduction
(dense parameters / compressed parameters). The verdict is printed for both batch sizes.

    .venv/bin/python bench/bench_inference.py [--errs 30,50,70] [--budgets 10,20] [--device cpu|cuda]
        [--seqlen 512] [--new-tokens 32] [--repeats 3] [--out docs/inference_table.md]
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import welore_core as wc
from welore_core.compression.apply import compress_to, save_compressed
from welore_core.compression.spectra import calibrated_fisher, calibrated_spectra
from welore_core.models import count_parameters, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
PROMPT = 64  # decode starts after a prompt of this many tokens
GOAL = 0.9  # decode speed-up at ERR 50 % all-layers >= GOAL x parameter reduction

PROBE = """
import inspect, json, sys, torch, welore_core as wc
folder, seqlen, new, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = wc.load_model(wc.resolve_model(folder), device=device).eval()
g = torch.Generator().manual_seed(0)
with torch.inference_mode():
    model(input_ids=torch.randint(0, 1000, (1, seqlen), generator=g).to(device), use_cache=False)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=torch.randint(0, 1000, (8, %d), generator=g).to(device), use_cache=True)
    for _ in range(new):
        out = model(input_ids=out.logits[:, -1:].argmax(-1), use_cache=True, **{key: out[key]})
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated() / 2**20
else:  # VmHWM: the peak RSS of this image (ru_maxrss would carry over the forking parent's peak across exec)
    peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps({"peak_mib": peak}))
""" % PROMPT


def cache_argument(model: torch.nn.Module) -> str:
    """The KV cache's name in the forward's arguments and outputs: `cache` from transformers 5.2x, before it
    `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(models: list[torch.nn.Module], run: Callable[[torch.nn.Module], float], repeats: int) -> list[float]:
    """The best of `repeats` timings of `run` on each model (it returns the seconds it timed), in interleaved
    rounds after one warm-up each."""
    for model in models:
        run(model)
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for i, model in enumerate(models):
            best[i] = min(best[i], run(model))
    return best


def prefill(seqlen: int, device: torch.device) -> Callable[[torch.nn.Module], float]:
    x = torch.randint(0, 1000, (1, seqlen), generator=torch.Generator().manual_seed(0)).to(device)

    def run(model: torch.nn.Module) -> float:
        with torch.inference_mode():
            _sync(device)
            start = time.perf_counter()
            model(input_ids=x, use_cache=False)
            _sync(device)
            return time.perf_counter() - start
    return run


def decode(batch: int, new: int, device: torch.device) -> Callable[[torch.nn.Module], float]:
    """Seconds for `new` greedy steps with the KV cache, after an untimed prefill of the prompt."""
    x = torch.randint(0, 1000, (batch, PROMPT), generator=torch.Generator().manual_seed(1)).to(device)

    def run(model: torch.nn.Module) -> float:
        key = cache_argument(model)
        with torch.inference_mode():
            out = model(input_ids=x, use_cache=True)
            _sync(device)
            start = time.perf_counter()
            for _ in range(new):
                out = model(input_ids=out.logits[:, -1:].argmax(-1), use_cache=True, **{key: out[key]})
            _sync(device)
            return time.perf_counter() - start
    return run


def peak_memory(folder: Path, seqlen: int, new: int, device: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(seqlen), str(new), device],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def build(tmp: Path, errs: list[float], budgets: list[float]) -> list[tuple[str, Path]]:
    """Every variant as a folder: (label, path), dense first."""
    source = wc.resolve_model(None)
    spectra = wc.compute_spectra(source)
    variants: list[tuple[str, Path]] = [("dense", source.path)]

    def save(label: str, plan: wc.RankPlan, config: wc.CompressionConfig, grams: dict[str, torch.Tensor] | None) -> None:
        model = wc.load_model(source)
        report = compress_to(model, plan, config, grams=grams)
        variants.append((label, save_compressed(model, tmp / f"v{len(variants)}", report, source.path)))
        print(f"  built {label}: {report.params_after / 1e6:.1f}M parameters", flush=True)

    for err in errs:
        for mode in ("lrc", "all"):
            save(f"WeLore {err:g} % {mode}", wc.make_plan(spectra, wc.PlanConfig(err=err)),
                 wc.CompressionConfig(mode=mode), None)
    if budgets:
        model, tokenizer = wc.load_model(source), load_tokenizer(source)
        calib = wc.Calibration(str(wc.data_dir() / "tinyshakespeare" / "input.txt"))
        whitened, grams, _ = calibrated_spectra(model, tokenizer, calib, like=spectra)
        fisher = calibrated_fisher(model, tokenizer, calib, whitened)
        del model
        for pct in budgets:
            save(f"fisher + ActSVD {pct:g} %", wc.make_plan(fisher, wc.PlanConfig(strategy="fisher", params=pct)),
                 wc.CompressionConfig(mode="all", act_svd=True), grams)
    return variants


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def main(errs: list[float], budgets: list[float], device_name: str, seqlen: int, new: int, repeats: int,
         out: Path | None) -> None:
    device = torch.device(device_name)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = build(Path(tmp), errs, budgets)
        models = [wc.load_model(wc.resolve_model(folder), device=device).eval() for _, folder in variants]
        params = [count_parameters(m) for m in models]
        print("timing prefill", flush=True)
        pre = best_of(models, prefill(seqlen, device), repeats)
        dec = {}
        for batch in (1, 8):
            print(f"timing decode, batch {batch}", flush=True)
            dec[batch] = best_of(models, decode(batch, new, device), repeats)
        del models
        print("peak memory, one fresh process per variant", flush=True)
        for i, (label, folder) in enumerate(variants):
            rows.append({"variant": label, "params": params[i], "prefill_s": pre[i],
                         "decode1_tps": new / dec[1][i], "decode8_tps": 8 * new / dec[8][i],
                         "peak_mib": peak_memory(folder, seqlen, new, device_name)})
    base = rows[0]
    memory = "peak memory MiB (CUDA allocated)" if device.type == "cuda" else "peak RSS MiB"
    lines = [f"| variant | params | param ratio | prefill ms (1×{seqlen}) | speed-up | decode tok/s, batch 1 | "
             f"speed-up | decode tok/s, batch 8 | speed-up | {memory} | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['params'] / 1e6:.1f}M | {r['params'] / base['params']:.3f} | "
                     f"{1e3 * r['prefill_s']:.1f} | {base['prefill_s'] / r['prefill_s']:.2f}× | "
                     f"{r['decode1_tps']:.1f} | {r['decode1_tps'] / base['decode1_tps']:.2f}× | "
                     f"{r['decode8_tps']:.1f} | {r['decode8_tps'] / base['decode8_tps']:.2f}× | "
                     f"{r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f} |")
    verdicts = []
    goal = next((r for r in rows if r["variant"] == "WeLore 50 % all"), None)
    if goal is not None:
        reduction = base["params"] / goal["params"]
        for batch in (1, 8):
            speedup = goal[f"decode{batch}_tps"] / base[f"decode{batch}_tps"]
            verdicts.append(f"- ERR 50 % all-layers, batch {batch}: decode speed-up {speedup:.2f}× against a parameter "
                            f"reduction of {reduction:.2f}× (goal ≥ {GOAL * reduction:.2f}×): "
                            f"{'met' if speedup >= GOAL * reduction else 'missed'}")
    header = (f"SmolLM2-135M-Instruct, float32, {machine(device)}; decode: {new} steps after a {PROMPT}-token prompt; "
              f"best of {repeats} interleaved rounds")
    text = "\n".join([header, "", *lines, "", *verdicts])
    print(text)
    if out is not None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        command = "bench/bench_inference.py " + " ".join(sys.argv[1:])
        out.write_text(f"# Inference: what compression buys\n\n`.venv/bin/python {command.strip()}` — "
                       f"{machine(device)}; figures from {commit} ({datetime.date.today()}).\n\n{text}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errs", default="30,50,70", help="WeLore ERR %% values, each in lrc and all-layers mode")
    parser.add_argument("--budgets", default="10,20", help="fisher + ActSVD parameter budgets (%% removed); '' for none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the table as markdown here")
    a = parser.parse_args()
    main([float(e) for e in a.errs.split(",") if e], [float(b) for b in a.budgets.split(",") if b], a.device,
         a.seqlen, a.new_tokens, a.repeats, a.out)
