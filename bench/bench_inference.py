"""Inference latency and memory: dense vs WeLore-compressed SmolLM2-135M at several ERR (Table 3 analogue).

LRCs factored (the paper's compressed checkpoint), N-LRCs dense. Latency: forward pass of one sequence,
best of N interleaved rounds after warm-up, all variants in this process. Memory: peak RSS of a fresh process that loads
the folder and runs the same forward (CPU has no allocator counter like CUDA's max_memory_allocated),
plus exact parameter bytes.

    .venv/bin/python bench/bench_inference.py [--errs 30,50,70] [--seqlen 512] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import welore_core as wc
from welore_core.compression.apply import compress_to, save_compressed
from welore_core.models import count_parameters

PROBE = """
import json, sys, torch, welore_core as wc
model = wc.load_model(wc.resolve_model(sys.argv[1]))
x = torch.randint(0, 1000, (1, int(sys.argv[2])))
with torch.inference_mode():
    model(input_ids=x, use_cache=False)
# VmHWM: peak RSS of this image (ru_maxrss would carry over the forking parent's peak across exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_rss_mib": int(hwm.split()[1]) / 1024}))
"""


def latencies(models: list[torch.nn.Module], seqlen: int, repeats: int) -> list[float]:
    """Best forward time of each model, measured in interleaved rounds so machine drift hits all alike."""
    x = torch.randint(0, 1000, (1, seqlen), generator=torch.Generator().manual_seed(0))
    best = [float("inf")] * len(models)
    with torch.inference_mode():
        for model in models:
            model(input_ids=x, use_cache=False)  # warm-up
        for _ in range(repeats):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(input_ids=x, use_cache=False)
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def peak_rss(folder: Path | str, seqlen: int) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(seqlen)], capture_output=True, text=True,
                         check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mib"])


def main(errs: list[float], seqlen: int, repeats: int) -> None:
    source = wc.resolve_model(None)
    spectra = wc.compute_spectra(source)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants: list[tuple[str, Path]] = [("dense", source.path)]
        for err in errs:
            model = wc.load_model(source)
            report = compress_to(model, wc.make_plan(spectra, wc.PlanConfig(err=err)))
            folder = save_compressed(model, Path(tmp) / f"err{err:g}", report, source.path)
            variants.append((f"WeLore {err:g} %", folder))
        models = [wc.load_model(wc.resolve_model(folder)) for _, folder in variants]
        times = latencies(models, seqlen, repeats)
        for (name, folder), model, seconds in zip(variants, models, times):
            params = count_parameters(model)
            rows.append({"variant": name, "params": params, "param_mib": params * 4 / 2**20, "latency_s": seconds,
                         "peak_rss_mib": peak_rss(folder, seqlen)})
    base = rows[0]
    print(f"SmolLM2-135M-Instruct, float32, CPU threads {torch.get_num_threads()}, one sequence of {seqlen} tokens")
    print(f"{'variant':>14s} {'params':>9s} {'ratio':>6s} {'param MiB':>10s} {'latency ms':>11s} {'ratio':>6s} "
          f"{'peak RSS MiB':>13s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['variant']:>14s} {r['params'] / 1e6:8.1f}M {r['params'] / base['params']:6.2f} {r['param_mib']:10.0f} "
              f"{1e3 * r['latency_s']:11.1f} {r['latency_s'] / base['latency_s']:6.2f} {r['peak_rss_mib']:13.0f} "
              f"{r['peak_rss_mib'] / base['peak_rss_mib']:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errs", default="30,50,70")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    a = parser.parse_args()
    main([float(e) for e in a.errs.split(",")], a.seqlen, a.repeats)
