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
Trainer); `welore_core.finetune.run_finetune` is this project's loop on top of them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import WeLoreError, WeLoreWarning
from ..models import LowRankLinear, discover_layers, find_blocks, unique_parameters
from ..utils import lr_factor
from .config import FinetuneConfig
from .sharded import local


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
        return sum(p.numel() for p in unique_parameters(self.model))


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


def _check_rank(model: nn.Module, rank: int, field: str) -> None:
    """A LoRA or GaLore rank above the full rank of every block matrix adds no capacity: LoRA's adapters would
    only add parameters and memory (a rank of 100000 needs gigabytes per layer), so it is refused; GaLore then
    projects nothing away and runs as plain AdamW, which works, so it is a warning."""
    matrices = set(block_matrices(model))
    full = max((min(p.shape) for n, p in model.named_parameters() if n in matrices), default=0)
    if not full or rank <= full:
        return
    message = (f"{field} {rank} is above the full rank of every matrix it applies to (at most {full} in "
               f"{type(model).__name__})")
    if field == "galore_rank":
        warnings.warn(f"{message}: GaLore projects nothing away and trains as plain AdamW", WeLoreWarning, 2)
        return
    raise WeLoreError(f"{message}; choose a rank of at most {full}")


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
    `merge_and_unload()`); every other mode trains `model` itself. Trainable parameters are float32 masters
    whatever the frozen weights are stored in (bfloat16 on a GPU): autocast computes in the weights' dtype.
    """
    mode = config.mode
    if config.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise WeLoreError(f"{type(model).__name__} does not support gradient checkpointing")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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

        _check_rank(model, config.lora_rank, "lora_rank")
        for p in model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(config.seed)  # LoRA's A init: the same adapters for the same seed
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules="all-linear", bias="none")
        with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in trainable.values():
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()  # the master copy the optimizer updates
    if mode == "galore":
        _check_rank(model, config.galore_rank, "galore_rank")
        projected = set(block_matrices(model))
        galore = [p for n, p in trainable.items() if n in projected]
        rest = [p for n, p in trainable.items() if n not in projected]
        groups = [{"params": rest}, {"params": galore, "rank": config.galore_rank, "update_proj_gap": config.galore_gap,
                                     "scale": config.galore_scale, "proj_type": "std"}]
    else:
        groups = [{"params": list(trainable.values())}]
    return Prepared(model, mode, trainable, [g for g in groups if g["params"]])


def build_optimizer(prepared: Prepared, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (fused, foreach or a plain loop: `config.optimizer`); GaLoreAdamW
    (galore_torch) in galore mode."""
    if prepared.mode == "galore":
        from galore_torch import GaLoreAdamW

        return GaLoreAdamW(prepared.param_groups, lr=config.lr, weight_decay=config.weight_decay,
                           no_deprecation_warning=True)
    kind = config.optimizer
    if kind == "auto":  # one fused kernel per step on a GPU; multi-tensor ops elsewhere
        cuda = all(p.device.type == "cuda" for p in prepared.trainable.values())
        kind = "fused" if cuda else "foreach"
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[kind]
    return torch.optim.AdamW(prepared.param_groups, lr=config.lr, weight_decay=config.weight_decay, **flags)


def build_scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine or linear decay to min_lr_ratio (or constant), over `config.steps`."""
    def factor(step: int) -> float:
        return lr_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio, config.scheduler)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _nbytes(t: torch.Tensor) -> int:
    t = local(t)  # sharded (--fsdp): what this process holds
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
    optimizer's state tensors as they are now (call it after at least one step). Sharded: this process's shards."""
    params = sum(_nbytes(p) for p in unique_parameters(prepared.model))
    grads = sum(_nbytes(p) for p in prepared.trainable.values())
    opt = sum(_nbytes(t) for t in optimizer_tensors(optimizer))
    return {"params": params, "grads": grads, "optimizer": opt, "total": params + grads + opt}
