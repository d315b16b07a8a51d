"""`welore dynamics`: pretrain a small LLaMA and record how its gradients and weights become low-rank.

    welore dynamics --config tiny|small|base|130m|FILE.json --data PATH --steps N --every N -o DIR [--json]

Rerunning with the same -o continues from the last checkpoint.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..dynamics import (DynamicsConfig, EmergenceConfig, claim_check, default_folder, emergence_summary, load_run,
                        presets, run_dynamics)
from .common import add_output, config_from, human, option, output_of, tqdm_progress

PRESET_DEFAULT = "(default: the preset's)"
HELP = {
    "data": "tinyshakespeare ($WELORE_DATA), wikitext2, c4, hub:<dataset>[:<config>] or a text file",
    "tokenizer": "byte, char (built locally) or a model folder / hub id",
    "steps": f"optimiser steps {PRESET_DEFAULT}",
    "every": f"record and checkpoint every N steps {PRESET_DEFAULT}",
    "batch_size": f"training windows per step {PRESET_DEFAULT}",
    "seqlen": f"tokens per window {PRESET_DEFAULT}",
    "lr": f"peak AdamW learning rate {PRESET_DEFAULT}",
    "weight_decay": "AdamW weight decay (GaLore: 0)",
    "min_lr_ratio": "the cosine schedule ends at lr x this; 1 keeps the rate constant after warm-up",
    "seed": "model init, batch order and sketch hashes",
    "probe_batch": "windows in the fixed probe batch",
    "sketch_dim": "count-sketch size of each recorded gradient",
    "full_max": "also store whole gradients (float16) of layers with at most this many entries",
    "device": "auto (cuda when present), cpu, cuda[:N]",
}


def cmd_dynamics(args: argparse.Namespace) -> dict[str, Any]:
    from ..figures import export_figures

    config = config_from(DynamicsConfig, args)
    emergence = config_from(EmergenceConfig, args)
    folder = output_of(args.output, folder=True) or default_folder(config)
    result = run_dynamics(config, folder, tqdm_progress("dynamics"))
    run = load_run(folder)
    summary = emergence_summary(run, emergence)
    claim = claim_check(summary)
    artefacts = dict(result["artefacts"])
    if args.html:
        artefacts["figures"] = [str(p) for p in export_figures(run, folder / "figures", config=emergence)]
    if human(args):
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dynamics", help="pretrain a small LLaMA and record gradient/weight spectra over training")
    option(p, DynamicsConfig, "preset", f"model preset ({', '.join(presets())}; small is the CPU default) or a JSON "
                                        "file like them", flag="--config")
    for name, text in HELP.items():
        option(p, DynamicsConfig, name, text)
    option(p, EmergenceConfig, "k", "normalised threshold for the rank-kept summary")
    p.add_argument("--html", action="store_true", help="also write the figures as HTML into DIR/figures")
    p.add_argument("-o", "--output", default=None,
                   help="run folder (default: cache/dynamics/<config>-<hash of the settings>)")
    add_output(p)
    p.set_defaults(run=cmd_dynamics)
