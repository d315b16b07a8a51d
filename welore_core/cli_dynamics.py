"""`welore dynamics`: pretrain a small LLaMA and record how its gradients and weights become low-rank.

    welore dynamics --config tiny|small|base|130m|FILE.json --data PATH --steps N --every N -o DIR [--json]

Rerunning with the same -o continues from the last checkpoint. `register(sub)` adds the subcommand to
the `welore` parser (welore_core.cli); `cmd_dynamics(args)` returns the JSON the CLI prints.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `dynamics` subcommand (conflict_handler="resolve": safe whether or not the caller also adds -v)."""
    from .dynamics import presets

    p = sub.add_parser("dynamics", help="pretrain a small LLaMA and record gradient/weight spectra over training",
                       conflict_handler="resolve")
    p.add_argument("--config", default="small",
                   help=f"model preset ({', '.join(presets())}; small is the CPU default) or a JSON file like them")
    p.add_argument("--data", default="tinyshakespeare",
                   help="tinyshakespeare ($WELORE_DATA), wikitext2, c4, hub:<dataset>[:<config>] or a text file")
    p.add_argument("--tokenizer", default="byte", help="byte, char (built locally) or a model folder / hub id")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the preset's)")
    p.add_argument("--every", type=int, help="record and checkpoint every N steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="training windows per step (default: the preset's)")
    p.add_argument("--seqlen", type=int, help="tokens per window (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: the preset's)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (GaLore: 0)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="the cosine schedule ends at lr x this; 1 keeps the rate constant after warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-batch", type=int, default=8, help="windows in the fixed probe batch")
    p.add_argument("--sketch-dim", type=int, default=4096, help="count-sketch size of each recorded gradient")
    p.add_argument("--full-max", type=int, default=65536,
                   help="also store whole gradients (float16) of layers with at most this many entries")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda[:N]")
    p.add_argument("--k", type=float, default=0.1, help="normalised threshold for the rank-kept summary")
    p.add_argument("--html", action="store_true", help="also write the figures as HTML into DIR/figures")
    p.add_argument("-o", "--output", default=None,
                   help="run folder (default: cache/dynamics/<config>-<hash of the settings>)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="human-readable output even with --json")
    p.set_defaults(run=cmd_dynamics)


def cmd_dynamics(args: argparse.Namespace) -> dict[str, Any]:
    from .cli import tqdm_progress
    from .dynamics import DynamicsConfig, default_folder, run_dynamics
    from .dynamics_analysis import EmergenceConfig, claim_check, emergence_summary, load_run

    config = DynamicsConfig(preset=args.config, data=args.data, tokenizer=args.tokenizer, steps=args.steps,
                            every=args.every, batch_size=args.batch_size, seqlen=args.seqlen, lr=args.lr,
                            weight_decay=args.weight_decay, min_lr_ratio=args.min_lr_ratio, seed=args.seed,
                            probe_batch=args.probe_batch, sketch_dim=args.sketch_dim, full_max=args.full_max,
                            device=args.device)
    emergence = EmergenceConfig(k=args.k)
    folder = Path(args.output) if args.output else default_folder(config)
    result = run_dynamics(config, folder, tqdm_progress("dynamics"))
    run = load_run(folder)
    summary = emergence_summary(run, emergence)
    claim = claim_check(summary)
    artefacts = dict(result["artefacts"])
    if args.html:
        from .charts_dynamics import export_figures

        artefacts["figures"] = [str(p) for p in export_figures(run, folder / "figures", config=emergence)]
    if not args.json or args.verbose:
        resumed = f", resumed at step {result['resumed_from']}" if result["resumed_from"] is not None else ""
        print(f"run          {folder} ({config.preset}, {result['params'] / 1e6:.2f}M parameters, "
              f"{result['layers']} layers)\n"
              f"trained      {config.steps} steps x {config.batch_size} x {config.seqlen} tokens on {config.data}, "
              f"{result['seconds']:.1f} s{resumed}\n"
              f"loss         train {result['train_loss']:.3f}, probe {result['probe_loss']:.3f}\n"
              f"recorded     {len(result['recorded'])} checkpoints: {result['recorded'][:8]}"
              f"{' ...' if len(result['recorded']) > 8 else ''}\n")
        cols = ["name", "w_rank_k_frac_start", "w_rank_k_frac_end", "w_erank_frac_end", "g_saturation", "grad_source"]
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"\nclaim check (k = {emergence.k:g}): terminal attention rank {claim['terminal_attention_rank']:.3f} vs "
              f"middle MLP rank {claim['middle_mlp_rank']:.3f}; Spearman(saturation, rank) = "
              f"{claim['spearman_saturation_vs_rank']:.2f}")
        if args.html:
            print(f"figures      {folder / 'figures'} ({len(artefacts['figures'])} HTML files)")
    return {**result, "artefacts": artefacts, "k": emergence.k, "claim": claim,
            "summary": summary.to_dict(orient="records")}
