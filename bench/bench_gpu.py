"""The GPU path at real width, every figure of issue 13 side by side in one run (a CPU runs it at a small size).

A synthetic LLaMA is built here with structured spectra (W = U diag(s) Vᵀ, a power law per layer type: q/k
heavy-tailed, v/o/MLP flatter), saved as safetensors in bf16 (GPU) or float32 (CPU), with a character
tokenizer. Then, each measured in a fresh process where memory is the question:

  spectra    core (streamed, method auto, batched) vs the paper's torch.svd per matrix, and the largest error
             against a float64 SVD
  compress   `welore compress --err 50` streamed on the device: seconds, peak host RSS vs the largest shard,
             peak device memory vs the model's bytes
  eval       core perplexity (batched, chunked head) vs a batch-1 fp16 `model(x, labels=x)` loop: tokens/s, model
             FLOP utilisation (2 · params · tokens/s over the GPU's dense bf16 peak), and PPL against float32
  finetune   lrc, nlrc, full, lora and galore on the compressed model, one process each: peak memory and tokens/s
             after a warm-up step, held-out PPL before and after; lrc and full sharded (--fsdp) under torchrun
             with one process (FSDP2's own overhead; the split over N GPUs needs N of them)

    .venv/bin/python bench/bench_gpu.py                 # 7B width (hidden 4096, MLP 11008), 8 blocks on a GPU
    .venv/bin/python bench/bench_gpu.py --size small    # what a CPU runs
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

SIZES = {  # hidden, MLP, blocks, heads, vocab, seqlen, batch
    "7b": (4096, 11008, 8, 32, 32000, 2048, 8),
    "small": (256, 688, 4, 8, 512, 256, 4),
}
DECAY = {"q_proj": 1.2, "k_proj": 1.2, "v_proj": 0.3, "o_proj": 0.4, "gate_proj": 0.5, "up_proj": 0.4, "down_proj": 0.6}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}  # dense, no sparsity
TABLE = "| what | measured | vs baseline | notes |\n|---|---:|---:|---|"  # head of the compress, eval, spectra rows
# lrc+ckpt: lrc with gradient checkpointing; +fsdp: sharded (--fsdp) under torchrun with ONE process, which shows
# FSDP2's own cost (float32 sharded masters, bf16 all-gathers) on one GPU, not the memory split over N GPUs
FT_MODES = ("lrc", "lrc+ckpt", "nlrc", "full", "lora", "galore", "lrc+fsdp", "full+fsdp")


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return peak * (756 / 989) if peak and "H100" in name and "PCIe" in name else peak


def build(folder: Path, size: str, device: torch.device) -> Path:
    """The synthetic LLaMA with structured spectra, saved with a character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, mlp, blocks, heads, vocab, seqlen, _ = SIZES[size]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=blocks, num_attention_heads=heads,
                         num_key_value_heads=heads, vocab_size=vocab, max_position_embeddings=max(seqlen, 4096),
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    g = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for name, module in model.named_modules():
            kind = name.rsplit(".", 1)[-1]
            if kind in DECAY:
                out, inp = module.weight.shape
                r = min(out, inp)
                u, _ = torch.linalg.qr(torch.randn(out, r, device=device, generator=g))  # (out, r)
                v, _ = torch.linalg.qr(torch.randn(inp, r, device=device, generator=g))  # (in, r)
                s = torch.arange(1, r + 1, device=device, dtype=torch.float32) ** -DECAY[kind]
                s = s / s[0] * (1.0 / math.sqrt(r) * 8) + 1e-3 / math.sqrt(r)  # a noise floor under the power law
                module.weight.copy_(((u * s) @ v.T).to(dtype))
    model.save_pretrained(folder)
    _char_tokenizer(vocab).save_pretrained(folder)
    return folder


def _char_tokenizer(vocab: int) -> Any:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    table = {c: i for i, c in enumerate(chars[: vocab - 1])}
    table["[UNK]"] = len(table)
    tok = Tokenizer(models.WordLevel(table, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return int(next(l for l in fh if l.startswith("VmHWM")).split()[1]) / 1024


def child(task: str, args: list[str]) -> dict[str, Any]:
    """One measurement in this fresh process; its result is the last line printed, as JSON."""
    import welore_core as wc

    device = wc.models.placement(args[0], "auto")[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if task == "compress":
        from welore_core.cli import main as cli

        torch.zeros(1, device=device) + 1  # the runtime (CUDA context, kernels) is resident before any weight
        base = peak_rss_mib()
        start = time.perf_counter()
        code = cli(["compress", args[1], "--err", "50", "--device", args[0], "-o", args[2], "--json"])
        out = {"code": code, "seconds": time.perf_counter() - start, "base_rss_mib": base}
    else:
        label, folder, data, out_dir, steps, seqlen, batch = args[1:8]
        mode, ckpt, fsdp = label.split("+")[0], label.endswith("+ckpt"), label.endswith("+fsdp")
        config = wc.FinetuneConfig(mode=mode, gradient_checkpointing=ckpt, fsdp=fsdp, data=data, steps=int(steps),
                                   seqlen=int(seqlen), batch_size=int(batch), lr=1e-4, eval_tokens=4 * int(seqlen),
                                   forget_tokens=0, save_every=0,
                                   device=args[0], galore_rank=128, galore_gap=50)
        r = wc.run_finetune(folder, config, Path(out_dir) / label.replace("+", "-"))
        warm = r.step_seconds[1:] or r.step_seconds  # after a warm-up step
        out = {"mode": mode, "label": label, "trainable": r.trainable_params, "peak_mib": r.peak_memory_mib,
               "tokens_per_s": int(batch) * int(seqlen) * len(warm) / sum(warm),
               "ppl_before": r.heldout_ppl_before, "ppl_after": r.heldout_ppl_after}
    out["peak_rss_mib"] = peak_rss_mib()
    out["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return out


def run_child(*args: str) -> dict[str, Any]:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if args[2].endswith("+fsdp") \
        else []  # a sharded run needs a launcher; one process here (see FT_MODES)
    proc = subprocess.run([sys.executable, *launcher, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_spectra(folder: Path, device: torch.device) -> None:
    import numpy as np

    import welore_core as wc

    source = wc.resolve_model(folder)
    model = wc.load_model(source, "bfloat16" if device.type == "cuda" else "float32", device)
    weights = [model.get_submodule(l.name).weight.detach() for l in wc.discover_layers(model)]
    sync(device)
    start = time.perf_counter()
    paper = [torch.svd(w.float())[1] for w in weights]  # U, S, V all computed, S kept (the paper's code)
    sync(device)
    t_paper = time.perf_counter() - start
    del model
    start = time.perf_counter()
    core = wc.compute_spectra(source, wc.SpectraConfig(device=str(device), use_cache=False))
    t_core = time.perf_counter() - start
    worst = 0.0
    for layer, w in zip(core.layers[:7], weights[:7]):  # one block against float64
        exact = torch.linalg.svdvals(w.double().cpu()).numpy()
        worst = max(worst, float(np.max(np.abs(core.values[layer.name] - exact)) / exact[0]))
    print(f"| spectra, paper: torch.svd per matrix (model in memory) | {t_paper:.2f} s | 1.00x | |")
    print(f"| spectra, core: {core.config.resolved_method}, streamed | {t_core:.2f} s | {t_paper / t_core:.2f}x "
          f"| max abs error {worst:.1e} s_max vs float64 |")
    del paper


def bench_eval(folder: Path, device: torch.device, seqlen: int, batch: int) -> None:
    import numpy as np

    import welore_core as wc

    source = wc.resolve_model(folder)
    params = wc.count_parameters(wc.load_model(source, "float32", "cpu")) if device.type != "cuda" else None
    ids = np.random.default_rng(0).integers(0, 90, size=seqlen * batch * 4)  # printable-character ids
    results = {}
    for name, dtype in (("core", "bfloat16" if device.type == "cuda" else "float32"), ("float32", "float32")):
        model = wc.load_model(source, dtype, device)
        params = params or wc.count_parameters(model)
        config = wc.EvalConfig(seqlen=seqlen, batch_size=batch, device=str(device))
        wc.perplexity(model, ids[: seqlen * batch], config)  # warm-up
        results[name] = wc.perplexity(model, ids, config)
        del model
    loop_dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = wc.load_model(source, loop_dtype, device)
    windows = torch.as_tensor(ids[: seqlen * batch * 4].reshape(-1, seqlen))
    sync(device)
    start, nll = time.perf_counter(), 0.0
    with torch.no_grad():
        for w in windows.to(device):
            nll += float(model(w[None], labels=w[None]).loss) * (seqlen - 1)
    sync(device)
    loop_tps = windows.numel() / (time.perf_counter() - start)
    loop_ppl = math.exp(nll / (windows.shape[0] * (seqlen - 1)))
    peak = peak_flops(device)
    core = results["core"]
    mfu = f"{100 * 2 * params * core.tokens_per_s / peak:.0f} % MFU" if peak else "MFU: no GPU peak known"
    print(f"| eval, batch-1 {str(loop_dtype)[6:]} loop `model(x, labels=x)` | {loop_tps:,.0f} tokens/s | 1.00x "
          f"| PPL {loop_ppl:.4f} |")
    print(f"| eval, core batch {batch}, seqlen {seqlen}, {core.tokens} tokens | {core.tokens_per_s:,.0f} tokens/s "
          f"| {core.tokens_per_s / loop_tps:.2f}x | PPL {core.ppl:.4f} ({100 * (core.ppl / results['float32'].ppl - 1):+.3f} "
          f"% vs float32), {mfu} of {params / 1e6:,.0f}M params |")


def section(title: str, work: Callable[[], None]) -> bool:
    """Run one part of the bench; a failure prints its traceback's tail and the bench goes on with the next."""
    try:
        work()
        return True
    except (Exception, SystemExit) as exc:  # SystemExit: a failed child (run_child)
        tail = "".join(traceback.format_exception(exc))[-2500:]
        print(f"\n{title} FAILED:\n{tail}\n", flush=True)
        return False


def main(size: str, steps: int, parts: set[str]) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = size if size != "auto" else ("7b" if device.type == "cuda" else "small")
    hidden, mlp, blocks, _, vocab, seqlen, batch = SIZES[size]
    data = str(Path(os.environ.get("WELORE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
               / "tinyshakespeare" / "input.txt")
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("WELORE_CACHE", str(Path(tmp) / "cache"))
        folder = build(Path(tmp) / "synthetic", size, device)
        shard = max(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
        model_mib = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"synthetic LLaMA {size}: hidden {hidden}, MLP {mlp}, {blocks} blocks, vocab {vocab}, "
              f"{model_mib:,.0f} MiB of weights, largest shard {shard:,.0f} MiB, on {name} "
              f"(built in {time.perf_counter() - begin:.0f} s)\n")
        print(TABLE, flush=True)
        compressed = Path(tmp) / "compressed"

        def compress() -> None:
            c = run_child("compress", str(device), str(folder), str(compressed))
            gpu = f", peak device {c['peak_device_mib']:,.0f} MiB (model {model_mib:,.0f} MiB)" if c["peak_device_mib"] else ""
            print(f"| compress --err 50, streamed on {device.type} | {c['seconds']:.1f} s | | peak host RSS "
                  f"{c['peak_rss_mib']:,.0f} MiB, {c['base_rss_mib']:,.0f} MiB of it the runtime before any weight "
                  f"(largest shard {shard:,.0f} MiB){gpu} |", flush=True)

        if not section("compress", compress) and device.type == "cuda" and "finetune" in parts:  # it needs a folder
            section("compress on the CPU (fallback)", lambda: run_child("compress", "cpu", str(folder), str(compressed)))
        if "eval" in parts:
            section("eval", lambda: bench_eval(folder, device, seqlen, batch))
        if "finetune" in parts:
            finetune_table(device, compressed, data, tmp, steps, seqlen, batch)
        if "spectra" in parts:  # last: the paper's torch.svd is the slowest part
            print(f"\n{TABLE}", flush=True)
            section("spectra", lambda: bench_spectra(folder, device))
        print(f"\nbench_gpu: {time.perf_counter() - begin:.0f} s in all", flush=True)


def finetune_table(device: torch.device, compressed: Path, data: str, tmp: str, steps: int, seqlen: int,
                   batch: int) -> None:
    """The fine-tuning modes, one process each, on the compressed folder; then each against full fine-tuning."""
    rows: list[dict[str, Any]] = []
    print(f"\nfine-tuning at ERR 50 %, {steps} steps x {batch} x {min(512, seqlen)} tokens of tiny-shakespeare, "
          "tokens/s after a warm-up step, one process per mode (vs full: after the full row)\n")
    print("| mode | trainable | peak MiB | tokens/s | held-out PPL before -> after |\n|---|---:|---:|---:|---:|",
          flush=True)
    for mode in FT_MODES:
        def finetune(mode: str = mode) -> None:
            r = run_child("finetune", str(device), mode, str(compressed), data, tmp, str(steps),
                          str(min(512, seqlen)), str(batch))
            rows.append(r)
            print(f"| {r['label']} | {r['trainable'] / 1e6:.1f}M | {r['peak_mib']:,.0f} | {r['tokens_per_s']:,.0f} "
                  f"| {r['ppl_before']:.2f} -> {r['ppl_after']:.2f} |", flush=True)
        section(f"finetune {mode}", finetune)
    full = next((r for r in rows if r["mode"] == "full"), None)
    if full:
        print("\n| mode | peak memory vs full | tokens/s vs full |\n|---|---:|---:|")
        for r in rows:
            print(f"| {r['label']} | {r['peak_mib'] / full['peak_mib']:.2f}x | "
                  f"{r['tokens_per_s'] / full['tokens_per_s']:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3:])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", choices=["auto", *SIZES])
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps per mode (the first is a warm-up)")
    parser.add_argument("--parts", default="compress,eval,finetune,spectra",
                        help="comma-separated parts to run (compress always runs: the fine-tuning table needs it)")
    a = parser.parse_args()
    main(a.size, a.steps, set(a.parts.split(",")))
