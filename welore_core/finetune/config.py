"""A fine-tuning run's settings: one frozen dataclass, validated in `__post_init__`, whose fields (all but
`save_every`) are the run's identity in the registry and whose defaults the CLI's options take."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import get_task
from ..errors import WeLoreError
from ..models import dtype_name, placement
from ..utils.schedule import SHAPES

MODES = ("lrc", "nlrc", "full", "lora", "galore")
SCHEDULERS = SHAPES
PRECISIONS = ("auto", "no", "bf16", "fp16")
OPTIMIZERS = ("auto", "fused", "foreach", "loop")  # AdamW implementations (auto: fused on CUDA, foreach elsewhere)


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
    params: float | None = None  # dense input only: compress to this parameter budget (percent removed, all layers)
    save_every: int = 100  # checkpoint every N steps (and at the end, and when cancelled); 0 = only those
    mixed_precision: str = "auto"  # accelerate autocast: auto = the weights' dtype when half, else "no"
    device: str = "auto"  # "auto" (cuda when present), "cpu"; `accelerate launch` places processes itself
    weights_dtype: str = "auto"  # frozen weights (auto = bfloat16 on a GPU); trainable ones keep float32 masters
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30 % more time
    optimizer: str = "auto"  # AdamW implementation, see OPTIMIZERS
    distill: bool = False  # learn the teacher's next-token distribution (KL), not only the text (`distill`)
    temperature: float = 1.0  # distill: softmax temperature of both distributions (the KL is scaled by T²)
    alpha: float = 0.0  # distill: share of the LM loss, (1 - alpha)·KL + alpha·LM
    teacher: str = ""  # distill: the teacher (default: the dense model the compressed input was made from)
    fsdp: bool = False  # shard parameters, gradients and optimizer state over the launched processes (`sharded`)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise WeLoreError(f"fine-tuning mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if bool(self.data) == bool(self.task):
            raise WeLoreError("fine-tuning needs exactly one of data (a text file) and task (a downstream task)")
        if self.task:
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
        for name in ("lora_alpha", "galore_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise WeLoreError(f"{name} must be a positive number, got {value!r}")
        if not all(math.isfinite(v) for v in (self.weight_decay, self.max_grad_norm, self.lora_dropout,
                                               self.min_lr_ratio, self.heldout)):
            raise WeLoreError("weight_decay, max_grad_norm, lora_dropout, min_lr_ratio and heldout must be finite "
                              f"numbers, got {self.weight_decay}, {self.max_grad_norm}, {self.lora_dropout}, "
                              f"{self.min_lr_ratio}, {self.heldout}")
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
        if self.eval_tokens is not None and self.eval_tokens < 1 or self.forget_tokens < 0:
            raise WeLoreError(f"eval_tokens must be positive and forget_tokens >= 0, got {self.eval_tokens}, "
                              f"{self.forget_tokens}")
        if sum(x is not None for x in (self.err, self.rankmap, self.params)) > 1:
            raise WeLoreError("pass at most one of err, params and rankmap")
        if self.params is not None and not 0 < self.params < 100:
            raise WeLoreError(f"params is a percentage of parameters removed in (0, 100), got {self.params}")
        if self.err is not None and not 0 < self.err < 100:
            raise WeLoreError(f"err is a percentage in (0, 100), got {self.err}")
        if self.rankmap is not None and not Path(self.rankmap).expanduser().is_file():
            raise WeLoreError(f"rank map {self.rankmap}: no such file")
        if self.save_every < 0:
            raise WeLoreError(f"save_every must be >= 0, got {self.save_every}")
        if self.mixed_precision not in PRECISIONS:
            raise WeLoreError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise WeLoreError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise WeLoreError(f"temperature must be a positive number, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha < 1):
            raise WeLoreError(f"alpha is the LM loss's share beside distillation, in [0, 1), got {self.alpha!r}")
        if not self.distill and (self.teacher or self.temperature != 1.0 or self.alpha != 0.0):
            raise WeLoreError("teacher, temperature and alpha set how a run distils: they need distill (--distill)")
        if self.fsdp and self.mode == "galore":
            raise WeLoreError("galore cannot run sharded (--fsdp): its projections take the SVD of each whole gradient "
                              "matrix, and FSDP gives every process a shard of it; run galore without --fsdp")
        if self.fsdp and self.precision() == "fp16":
            raise WeLoreError("--fsdp trains in float32 or bf16: fp16 would need a sharded gradient scaler; use "
                              "bfloat16 weights or mixed_precision bf16")
        device, weights = self.placement()
        if self.precision() == "fp16" and device.type == "cpu":
            raise WeLoreError("mixed_precision fp16 needs a GPU: accelerate runs no float16 autocast on the CPU, so "
                              "the run would silently train in float32; use bf16 or no on the CPU")
        if weights != torch.float32 and self.mixed_precision == "no":
            raise WeLoreError(f"{dtype_name(weights)} weights train with float32 masters under autocast: use "
                              "mixed_precision auto (or bf16/fp16), or float32 weights")

    def placement(self) -> tuple[torch.device, torch.dtype]:
        """(device, dtype of the frozen weights), auto resolved."""
        return placement(self.device, self.weights_dtype, "fine-tuning")

    def precision(self) -> str:
        """accelerate's mixed_precision: auto follows half weights (bf16 -> bf16, fp16 -> fp16), else no."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.placement()[1], "no")

    def check_budgets(self) -> None:
        """The evaluation budgets hold a window each (checked after the model's position limit)."""
        if self.eval_tokens is not None and self.eval_tokens < self.seqlen:
            raise WeLoreError(f"eval_tokens {self.eval_tokens} is less than one window of seqlen {self.seqlen}")
        if self.forget_tokens and self.forget_tokens < self.seqlen:
            raise WeLoreError(f"forget_tokens {self.forget_tokens} is less than one window of seqlen {self.seqlen}")


