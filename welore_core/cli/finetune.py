"""`welore finetune`: fine-tune a (compressed) model in one mode and write it back as a model folder.

OUT has the input's layout, tensor names and dtypes (LoRA merged back), so `welore eval OUT` works on
it. A dense MODEL is compressed first with --err/--rankmap (LRCs factored), else trained as it is with
every layer an N-LRC (lrc mode then has nothing to train). Rerunning the same command resumes from the
last checkpoint (`OUT.checkpoints/`), or prints the finished result.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..compression.plan import read_rankmap
from ..data import TASKS
from ..finetune import MODES, PRECISIONS, SCHEDULERS, FinetuneConfig, run_finetune
from ..finetune.config import OPTIMIZERS
from ..models import WEIGHT_DTYPES, resolve_model
from .common import add_model, add_output, config_from, human, option, output_of, tqdm_progress
from .planning import warn_foreign_rankmap

HELP = {
    "mode": "lrc (WeLore: LRC factors only), nlrc, full, lora or galore",
    "data": "training text: a file, wikitext2, tinyshakespeare or hub:NAME[:CONFIG[:SPLIT]]",
    "task": "or a downstream task",
    "steps": "optimizer steps",
    "seqlen": "tokens per training window / longest example",
    "batch_size": "windows per micro-batch (per process)",
    "grad_accum": "micro-batches per optimizer step",
    "lr": "peak learning rate",
    "weight_decay": "AdamW weight decay",
    "scheduler": "decay after --warmup-steps",
    "warmup_steps": "linear warm-up steps",
    "seed": "LoRA init and the order of training batches",
    "heldout": "tail fraction of the text kept for held-out PPL",
    "eval_tokens": "held-out tokens scored before and after",
    "forget_tokens": "WikiText-2 tokens scored before/after (0: skip)",
    "eval_examples": "downstream examples for the accuracy",
    "lora_rank": "LoRA adapter rank",
    "lora_alpha": "LoRA scaling numerator",
    "galore_rank": "GaLore projection rank",
    "galore_gap": "steps between GaLore projection updates",
    "err": "dense MODEL: compress to this ERR (%) first",
    "rankmap": "dense MODEL: compress with this rank map first",
    "params": "dense MODEL: compress to this parameter budget (percent removed, every layer) first",
    "save_every": "checkpoint every N steps (0: only at the end)",
    "mixed_precision": "accelerate autocast",
    "device": "auto (cuda when present) or cpu",
    "weights_dtype": "dtype of the frozen weights; trainable ones keep float32 masters (auto = bfloat16 on a GPU)",
    "gradient_checkpointing": "recompute block activations in the backward pass (less memory, more time)",
    "optimizer": "AdamW implementation (auto: fused on a GPU, foreach elsewhere)",
    "distill": "learn the dense teacher's next-token distribution: KL(teacher || student) over the vocabulary",
    "temperature": "distillation temperature (both softmaxes; the KL is scaled by T^2)",
    "alpha": "share of the LM loss beside distillation: (1 - alpha) KL + alpha LM",
    "teacher": "distillation teacher (default: the dense model the compressed input was made from, per its manifest)",
    "fsdp": "shard parameters, gradients and optimizer state over the processes (FSDP2; under torchrun or "
            "accelerate launch)",
}
CHOICES = {"mode": MODES, "task": sorted(TASKS), "scheduler": SCHEDULERS, "mixed_precision": PRECISIONS,
           "weights_dtype": WEIGHT_DTYPES, "optimizer": OPTIMIZERS}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def cmd_finetune(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from(FinetuneConfig, args)
    output = output_of(args.output, folder=True, model=args.model)
    if config.rankmap:
        warn_foreign_rankmap(read_rankmap(Path(config.rankmap)), resolve_model(args.model))
    result = run_finetune(args.model, config, output, tqdm_progress(f"finetune {config.mode}"),
                          checkpoint_dir=args.checkpoint_dir, keep_checkpoints=args.keep_checkpoints)
    if human(args) and os.environ.get("RANK", "0") == "0":  # under a launcher: the main process speaks
        r = result
        note = " (finished earlier: from the output folder)" if r.cached else ""
        resumed = f", resumed at step {r.resumed_from}" if r.resumed_from else ""
        print(f"{r.model} -> {r.output}: {r.mode} mode, {r.steps} steps{resumed}{note}\n"
              f"trainable    {r.trainable_params / 1e6:.3f}M of {r.total_params / 1e6:.2f}M "
              f"({100 * r.trainable_fraction:.1f} %)\n"
              f"loss         {_fmt(r.loss_curve[0][1] if r.loss_curve else None)} -> {_fmt(r.final_loss)}\n"
              f"held-out PPL {_fmt(r.heldout_ppl_before)} -> {_fmt(r.heldout_ppl_after)}"
              + (f"; WikiText-2 PPL {_fmt(r.wikitext_ppl_before)} -> {_fmt(r.wikitext_ppl_after)}"
                 if r.wikitext_ppl_after is not None else "")
              + (f"; accuracy {_fmt(r.accuracy_before)} -> {_fmt(r.accuracy_after)}"
                 if r.accuracy_after is not None else "") + "\n"
              f"memory       peak {_fmt(r.peak_memory_mib, '.0f')} MiB ({r.peak_memory_kind}); "
              f"params+grads+optimizer {r.state_bytes['total'] / 2**20:.1f} MiB"
              f"{' per process (sharded)' if config.fsdp else ''}\n"
              f"throughput   {_fmt(r.tokens_per_s, '.0f')} tokens/s on {r.device}"
              + (" (student and teacher)" if config.distill else ""))
    return result.to_dict()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("finetune", help="fine-tune a compressed model: LRC-only (WeLore), N-LRC, full, LoRA or GaLore")
    add_model(p, "compressed folder or model (default: embedded SmolLM2-135M, then pass --err to compress it)")
    for name, text in HELP.items():
        option(p, FinetuneConfig, name, text, choices=CHOICES.get(name))
    p.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT.checkpoints beside OUT)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint after the run")
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    add_output(p)
    p.set_defaults(run=cmd_finetune)
