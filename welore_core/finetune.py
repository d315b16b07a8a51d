"""Fine-tuning a WeLore-compressed model: which parameters train in each mode, and with which optimizer.

WeLore's proposal (arXiv 2407.11239 §4): after compression, back-propagate only through the Low-Rank
Components in their factored form — the A (out x r) and B (r x in) of every `LowRankLinear` — with the
N-LRCs, embeddings, norms and head frozen, so gradients and optimizer state are low-rank by construction.
The comparison modes (same data, seed, schedule and steps):

  lrc    — every parameter of the LowRankLinear modules (A, B, and A's bias when the layer has one)
  nlrc   — the dense linear layers inside the blocks (weight and bias); LRC factors frozen (Figure 5)
  full   — every parameter of the compressed model
  lora   — PEFT LoRA adapters (rank `lora_rank`) on every linear of the compressed model but the head,
           which includes the A and B halves of each LRC; the model itself frozen (Table 4/5 baseline)
  galore — every parameter, GaLoreAdamW projecting the gradients of the 2-D linear weights inside the
           blocks (LRC factors included) to rank `galore_rank`; the rest in a plain Adam group

`prepare_model` and `build_optimizer` are the public pieces for users who run their own loop (or
Trainer); `welore_core.finetune_run.run_finetune` is this project's loop on top of them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .devices import parse_device
from .errors import WeLoreError
from .layers import discover_layers, find_blocks
from .lowrank import LowRankLinear

MODES = ("lrc", "nlrc", "full", "lora", "galore")
SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run; every field but `save_every` is part of the run's identity in the registry."""

    mode: str = "lrc"  # see MODES
    data: str = ""  # training text: a file, "wikitext2" or "hub:NAME[:CONFIG[:SPLIT]]" (exclusive with task)
    task: str = ""  # a downstream task (downstream.TASKS): train on its train split, report accuracy
    steps: int = 100  # optimizer steps (the paper's continual runs: 10k; its tables: 0.7M tokens)
    seqlen: int = 256  # tokens per training window (text) or longest example (task)
    batch_size: int = 4  # windows per micro-batch (per process under `accelerate launch`)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # peak learning rate (the paper: 5e-5 on 7B models)
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # decays to min_lr_ratio x lr after warm-up (the paper's continual set-up)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0  # clip the trainable parameters' gradient norm; 0 = no clipping
    seed: int = 0  # model-side randomness (LoRA init, dropout) and the order of training batches
    heldout: float = 0.1  # tail of the text kept out of training for the held-out perplexity
    eval_tokens: int | None = 8192  # held-out tokens scored before and after (None = the whole tail)
    forget_tokens: int = 8192  # WikiText-2 test tokens scored before and after (forgetting); 0 = skip
    eval_examples: int = 100  # downstream: evaluation examples for the accuracy before and after
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    galore_rank: int = 128  # projection rank (GaLore's default; larger than a matrix = full rank)
    galore_gap: int = 200  # steps between recomputed projections (GaLore's update_proj_gap)
    galore_scale: float = 0.25
    err: float | None = None  # dense input only: compress to this ERR (LRCs factored) before training
    rankmap: str | None = None  # dense input only: compress with this rank map before training
    save_every: int = 100  # checkpoint every N steps (and at the end, and when cancelled); 0 = only those
    mixed_precision: str = "no"  # accelerate autocast: "no", "bf16", "fp16"
    device: str = "auto"  # "auto" (cuda when present), "cpu"; `accelerate launch` places processes itself

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise WeLoreError(f"fine-tuning mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if bool(self.data) == bool(self.task):
            raise WeLoreError("fine-tuning needs exactly one of data (a text file) and task (a downstream task)")
        if self.task:
            from .downstream import get_task

            get_task(self.task)
        positive = {"steps": self.steps, "seqlen": self.seqlen, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "lora_rank": self.lora_rank, "galore_rank": self.galore_rank,
                    "galore_gap": self.galore_gap, "eval_examples": self.eval_examples}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise WeLoreError(f"{name} must be a positive integer, got {value!r}")
        if self.seqlen < 2:
            raise WeLoreError(f"seqlen must be at least 2, got {self.seqlen}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise WeLoreError(f"lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.lora_dropout < 0 or self.lora_dropout >= 1:
            raise WeLoreError(f"weight_decay, max_grad_norm >= 0 and lora_dropout in [0, 1), got {self.weight_decay}, "
                              f"{self.max_grad_norm}, {self.lora_dropout}")
        if self.scheduler not in SCHEDULERS:
            raise WeLoreError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if not 0 <= self.warmup_steps < self.steps or not 0 <= self.min_lr_ratio <= 1:
            raise WeLoreError(f"warmup_steps must be in [0, steps) and min_lr_ratio in [0, 1], got "
                              f"{self.warmup_steps}, {self.min_lr_ratio}")
        if not 0 < self.heldout < 1:
            raise WeLoreError(f"heldout must be a fraction in (0, 1), got {self.heldout}")
        if self.eval_tokens is not None and self.eval_tokens < self.seqlen:
            raise WeLoreError(f"eval_tokens {self.eval_tokens} is less than one window of seqlen {self.seqlen}")
        if self.forget_tokens and self.forget_tokens < self.seqlen:
            raise WeLoreError(f"forget_tokens {self.forget_tokens} is less than one window of seqlen {self.seqlen}")
        if self.err is not None and self.rankmap is not None:
            raise WeLoreError("pass at most one of err and rankmap")
        if self.err is not None and not 0 < self.err < 100:
            raise WeLoreError(f"err is a percentage in (0, 100), got {self.err}")
        if self.rankmap is not None and not Path(self.rankmap).expanduser().is_file():
            raise WeLoreError(f"rank map {self.rankmap}: no such file")
        if self.save_every < 0:
            raise WeLoreError(f"save_every must be >= 0, got {self.save_every}")
        if self.mixed_precision not in PRECISIONS:
            raise WeLoreError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        parse_device(self.device, "fine-tuning device")


@dataclass
class Prepared:
    """A model set up for one mode: what trains, and the optimizer's parameter groups."""

    model: nn.Module  # the module to train (a peft.PeftModel in lora mode)
    mode: str
    trainable: dict[str, nn.Parameter]  # name (as in `model`) -> parameter with requires_grad
    param_groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.trainable.values())

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())


def lrc_names(model: nn.Module) -> list[str]:
    """Dotted names of the model's LowRankLinear modules (its LRCs)."""
    return [n for n, m in model.named_modules() if isinstance(m, LowRankLinear)]


def nlrc_names(model: nn.Module) -> list[str]:
    """Dotted names of the dense linear layers inside the decoder blocks (its N-LRCs)."""
    return [layer.name for layer in discover_layers(model)
            if not isinstance(model.get_submodule(layer.name), LowRankLinear)]


def block_matrices(model: nn.Module) -> list[str]:
    """Names of the 2-D weights of linear layers inside the blocks, LRC factors included (GaLore's set)."""
    prefix, _ = find_blocks(model)
    names = []
    for name, module in model.named_modules():
        if name.startswith(prefix + ".") and isinstance(module, nn.Linear):
            names.append(f"{name}.weight")
    return names


def _only(model: nn.Module, modules: list[str]) -> None:
    """requires_grad on exactly the parameters of `modules` (and everything below them)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in modules:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)


def prepare_model(model: nn.Module, config: FinetuneConfig) -> Prepared:
    """Freeze / wrap `model` in place for `config.mode`; returns the trainable set and optimizer groups.

    For lora the returned `Prepared.model` is the PeftModel wrapping `model` (merge it back with
    `merge_and_unload()`); every other mode trains `model` itself.
    """
    mode = config.mode
    if mode == "lrc":
        names = lrc_names(model)
        if not names:
            raise WeLoreError(f"{type(model).__name__} has no LowRankLinear layers (LRCs): lrc mode has nothing to "
                              "train; compress it first (err or rankmap)")
        _only(model, names)
    elif mode == "nlrc":
        names = nlrc_names(model)
        if not names:
            raise WeLoreError(f"{type(model).__name__}: every block layer is an LRC; nlrc mode has nothing to train")
        _only(model, names)
    elif mode in ("full", "galore"):
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        for p in model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(config.seed)  # LoRA's A init: the same adapters for the same seed
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules="all-linear", bias="none")
        with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if mode == "galore":
        projected = set(block_matrices(model))
        galore = [p for n, p in trainable.items() if n in projected]
        rest = [p for n, p in trainable.items() if n not in projected]
        groups = [{"params": rest}, {"params": galore, "rank": config.galore_rank, "update_proj_gap": config.galore_gap,
                                     "scale": config.galore_scale, "proj_type": "std"}]
    else:
        groups = [{"params": list(trainable.values())}]
    return Prepared(model, mode, trainable, [g for g in groups if g["params"]])


def build_optimizer(prepared: Prepared, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; GaLoreAdamW (galore_torch) in galore mode."""
    if prepared.mode == "galore":
        from galore_torch import GaLoreAdamW

        return GaLoreAdamW(prepared.param_groups, lr=config.lr, weight_decay=config.weight_decay,
                           no_deprecation_warning=True)
    return torch.optim.AdamW(prepared.param_groups, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine or linear decay to min_lr_ratio (or constant), over `config.steps`."""
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        if config.scheduler == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.scheduler == "cosine" else 1 - progress
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor the optimizer holds as state (moments, step counters, GaLore projection matrices)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the real one
    found: list[torch.Tensor] = []
    for state in inner.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                found.append(value)
            elif hasattr(value, "ortho_matrix"):  # galore_torch.GaLoreProjector
                ortho = value.ortho_matrix
                found += [t for t in (ortho if isinstance(ortho, (list, tuple)) else [ortho]) if t is not None]
    return found


def state_bytes(prepared: Prepared, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Exact bytes of the training state: all parameters, one gradient per trainable parameter, and the
    optimizer's state tensors as they are now (call it after at least one step)."""
    params = sum(_nbytes(p) for p in {id(p): p for p in prepared.model.parameters()}.values())
    grads = sum(_nbytes(p) for p in prepared.trainable.values())
    opt = sum(_nbytes(t) for t in optimizer_tensors(optimizer))
    return {"params": params, "grads": grads, "optimizer": opt, "total": params + grads + opt}
