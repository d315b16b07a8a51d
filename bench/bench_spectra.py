"""Spectra time on the embedded SmolLM2-135M: this core vs the paper's path, side by side in one process.

Paper's path (WeLore reference code): the model in memory, `torch.svd(W)` per matrix (U, S and V all
computed), S kept. This core: method `auto` (= gram: eigvalsh of WᵀW in float64, on a pool of
single-threaded workers, reading the next tensor from safetensors while they work), the `svdvals` method
(float32 LAPACK singular values of the tall orientation) on the same pool, and the warm cache read.

    .venv/bin/python bench/bench_spectra.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def main(repeats: int = 3) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import welore_core as wc

    source = wc.resolve_model(None)
    model = wc.load_model(source)
    layers = wc.discover_layers(model)
    weights = [model.get_submodule(l.name).weight.detach() for l in layers]
    torch.linalg.svdvals(torch.randn(256, 256))  # warm-up: LAPACK threads, allocator
    print(f"model {source.label}: {len(layers)} matrices, torch threads {torch.get_num_threads()}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")

    def paper() -> list[np.ndarray]:
        return [torch.svd(w.float())[1].numpy() for w in weights]

    def core(method: str) -> wc.Spectra:
        return wc.compute_spectra(source, wc.SpectraConfig(method=method, use_cache=False))

    def best(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    t_paper, ref = best(paper)
    t_core, spectra = best(lambda: core("auto"))
    t_gram, gram = best(lambda: core("svdvals"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WELORE_CACHE"] = tmp
        wc.compute_spectra(source)  # fill a fresh cache
        t_warm, _ = best(lambda: wc.compute_spectra(source))
    dev = max(float(np.max(np.abs(spectra.values[l.name] - r)) / r[0]) for l, r in zip(layers, ref))  # type: ignore[union-attr]
    dev_gram = max(float(np.max(np.abs(gram.values[l.name] - r)) / r[0]) for l, r in zip(layers, ref))  # type: ignore[union-attr]
    print(f"{'path':44s} {'seconds':>8s} {'vs paper':>9s}")
    print(f"{'paper: torch.svd per matrix, model in memory':44s} {t_paper:8.2f} {1.0:8.2f}x")
    print(f"{'core: auto (' + spectra.config.resolved_method + '), streamed':44s} {t_core:8.2f} {t_paper / t_core:8.2f}x"
          f"   max |ds|/s_max vs paper {dev:.1e}")
    print(f"{'core: svdvals (float32 LAPACK), streamed':44s} {t_gram:8.2f} {t_paper / t_gram:8.2f}x"
          f"   max |ds|/s_max vs paper {dev_gram:.1e}")
    print(f"{'core: warm cache read (second load)':44s} {t_warm:8.3f} {t_paper / t_warm:8.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
