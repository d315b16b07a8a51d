"""`welore finetune`: fine-tune a (compressed) model in one mode and write it back as a model folder.

    welore finetune MODEL|DIR --mode lrc|nlrc|full|lora|galore (--data PATH | --task NAME) --steps N
                    [--seqlen L] [--lr LR] [--err PCT | --rankmap FILE] -o OUT [--json]

OUT has the input's layout, tensor names and dtypes (LoRA merged back), so `welore eval OUT` works on
it. A dense MODEL is compressed first with --err/--rankmap (LRCs factored), else trained as it is with
every layer an N-LRC (lrc mode then has nothing to train). Rerunning the same command resumes from the
last checkpoint (`OUT.checkpoints/`), or prints the finished result. `register(sub)` adds the command
to the `welore` parser.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `finetune` subcommand to `welore`'s subparsers (with its own --json and -v/--verbose)."""
    p = sub.add_parser("finetune", help="fine-tune a compressed model: LRC-only (WeLore), N-LRC, full, LoRA or GaLore")
    p.add_argument("model", nargs="?", default=None,
                   help="compressed folder or model (default: embedded SmolLM2-135M, then pass --err to compress it)")
    p.add_argument("--mode", default="lrc", help="lrc (WeLore: LRC factors only), nlrc, full, lora or galore")
    p.add_argument("--data", default="", help="training text: a file, wikitext2, or hub:NAME[:CONFIG[:SPLIT]]")
    p.add_argument("--task", default="",
                   help="or a downstream task: coin_flip, strategyqa, boolq, commonsenseqa, svamp")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per training window / longest example")
    p.add_argument("--batch-size", type=int, default=4, help="windows per micro-batch (per process)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--scheduler", default="cosine", help="cosine, linear or constant (after --warmup-steps)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.1, help="tail fraction of the text kept for held-out PPL")
    p.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens scored before and after")
    p.add_argument("--forget-tokens", type=int, default=8192, help="WikiText-2 tokens scored before/after (0: skip)")
    p.add_argument("--eval-examples", type=int, default=100, help="downstream examples for the accuracy")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--galore-rank", type=int, default=128)
    p.add_argument("--galore-gap", type=int, default=200, help="steps between GaLore projection updates")
    p.add_argument("--err", type=float, help="dense MODEL: compress to this ERR (%%) first")
    p.add_argument("--rankmap", help="dense MODEL: compress with this rank map first")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT.checkpoints beside OUT)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint after the run")
    p.add_argument("--mixed-precision", default="no", help="no, bf16 or fp16 (accelerate autocast)")
    p.add_argument("--device", default="auto", help="auto (cuda when present) or cpu")
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="human-readable output even with --json")
    p.set_defaults(run=cmd_finetune)


def config_from_args(args: argparse.Namespace) -> Any:
    from .finetune import FinetuneConfig

    return FinetuneConfig(
        mode=args.mode, data=args.data, task=args.task, steps=args.steps, seqlen=args.seqlen,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        scheduler=args.scheduler, warmup_steps=args.warmup_steps, seed=args.seed, heldout=args.heldout,
        eval_tokens=args.eval_tokens, forget_tokens=args.forget_tokens, eval_examples=args.eval_examples,
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, galore_rank=args.galore_rank, galore_gap=args.galore_gap,
        err=args.err, rankmap=args.rankmap, save_every=args.save_every, mixed_precision=args.mixed_precision,
        device=args.device)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def cmd_finetune(args: argparse.Namespace) -> dict[str, Any]:
    from .cli import tqdm_progress  # here, not at the top: cli imports this module to register the command
    from .finetune_run import run_finetune

    config = config_from_args(args)
    result = run_finetune(args.model, config, Path(args.output), tqdm_progress(f"finetune {config.mode}"),
                      checkpoint_dir=args.checkpoint_dir, keep_checkpoints=args.keep_checkpoints)
    if not args.json or args.verbose:
        note = " (finished earlier: from the output folder)" if result.get("cached") else ""
        resumed = f", resumed at step {result['resumed_from']}" if result.get("resumed_from") else ""
        state = result["state_bytes"]
        print(f"{result['model']} -> {result['output']}: {result['mode']} mode, "
              f"{result['steps']} steps{resumed}{note}\n"
              f"trainable    {result['trainable_params'] / 1e6:.3f}M of {result['total_params'] / 1e6:.2f}M "
              f"({100 * result['trainable_fraction']:.1f} %)\n"
              f"loss         {_fmt(result['loss_curve'][0][1] if result['loss_curve'] else None)} -> "
              f"{_fmt(result['final_loss'])}\n"
              f"held-out PPL {_fmt(result['heldout_ppl_before'])} -> {_fmt(result['heldout_ppl_after'])}"
              + (f"; WikiText-2 PPL {_fmt(result['wikitext_ppl_before'])} -> {_fmt(result['wikitext_ppl_after'])}"
                 if result["wikitext_ppl_after"] is not None else "")
              + (f"; accuracy {_fmt(result['accuracy_before'])} -> {_fmt(result['accuracy_after'])}"
                 if result["accuracy_after"] is not None else "") + "\n"
              f"memory       peak {_fmt(result['peak_memory_mib'], '.0f')} MiB ({result['peak_memory_kind']}); "
              f"params+grads+optimizer {state['total'] / 2**20:.1f} MiB\n"
              f"throughput   {_fmt(result['tokens_per_s'], '.0f')} tokens/s on {result['device']}")
    return result
