"""The learning-rate schedule of every training loop here: linear warm-up, then cosine or linear decay.

Used by fine-tuning (`finetune.modes.build_scheduler`) and by the gradient-dynamics lab (GaLore's
pretraining schedule: warm-up, cosine to 10 % of the peak).
"""
from __future__ import annotations

import math

SHAPES = ("cosine", "linear", "constant")


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float, shape: str = "cosine") -> float:
    """The multiplier of the peak rate for optimizer step `step` (0-based) of `steps`.

    Warm-up: (step + 1) / (warmup + 1), so the first step is never at rate 0 and the peak is reached at
    step `warmup`; then `shape` decays from 1 to `min_ratio` at the last step (constant stays at 1).
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if shape == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay
