"""Distillation from the dense model (issue 25): the compressed student learns the dense teacher's next-token
distribution, which carries far more per token than the one-hot LM target and does not pull the model towards
the training text's domain the way the LM loss does.

    loss = (1 − α) · T² · KL(p_teacher^T ‖ p_student^T) + α · LM,    p^T = softmax(logits / T),

averaged over the positions the LM loss scores (every position of a text window; the answer of a task
example). The teacher runs in inference mode, on the student's device and in the weights dtype. Its logits
are never held whole: its last hidden states are kept and the output head is applied a chunk of positions
at a time, each chunk's KL taken against the student's logits for those positions.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeLoreError
from ..models import ModelSource, dense_source, resolve_model

CHUNK = 128  # positions per chunk of teacher logits


def teacher_source(source: ModelSource, teacher: str, compresses_first: bool) -> ModelSource:
    """Which model teaches `source`: `teacher` when given; else the dense model a compressed folder was made from
    (`models.dense_source`); else a dense input that the run compresses first teaches its compressed self."""
    if teacher:
        return resolve_model(teacher)
    if source.kind == "compressed":
        return dense_source(source, "pass --teacher MODEL")
    if compresses_first:
        return source
    raise WeLoreError("--distill needs a teacher: the input is dense and is not compressed first, so it would teach "
                      "itself; pass --teacher MODEL")


def describe_teacher(spec: str | None, teacher: str = "", compresses_first: bool = True) -> str:
    """The teacher a distillation run of `spec` would use, as a line: its label and path (WeLoreError when none
    is found)."""
    chosen = teacher_source(resolve_model(spec), teacher, compresses_first)
    return f"{chosen.label} ({chosen.path})"


def check_teacher(teacher: nn.Module, student: nn.Module, label: str) -> None:
    """The teacher must predict over the student's vocabulary."""
    t = teacher.get_output_embeddings()
    s = student.get_output_embeddings()
    if t is None or s is None or t.weight.shape[0] != s.weight.shape[0]:
        raise WeLoreError(f"teacher {label}: its vocabulary ({None if t is None else t.weight.shape[0]}) is not the "
                          f"student's ({None if s is None else s.weight.shape[0]}); distil from a model with the same "
                          "tokenizer")


def scored_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(batch, seq) bool: the positions whose next token the LM loss scores (labels shifted, padding out)."""
    labels = batch["labels"]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    attention = batch.get("attention_mask")
    if attention is not None:
        mask[:, :-1] &= attention[:, 1:].bool()
    return mask


def teacher_hidden(teacher: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's last hidden states (batch, seq, hidden), after its final norm, in inference mode."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        return teacher.base_model(**inputs, use_cache=False).last_hidden_state


def distill_kl(student_logits: torch.Tensor, hidden: torch.Tensor, head: nn.Module, mask: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """T² · mean over `mask` of KL(softmax(z_t / T) ‖ softmax(z_s / T)), the teacher's logits z_t = head(hidden)
    made CHUNK positions at a time."""
    total = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, student_logits.shape[1], CHUNK):
        where = mask[:, start:start + CHUNK]
        if not where.any():
            continue
        with torch.inference_mode():
            log_t = F.log_softmax(head(hidden[:, start:start + CHUNK][where]).float() / temperature, dim=-1)
        log_t = log_t.clone()  # a plain tensor: autograd may keep it for the student's backward
        log_s = F.log_softmax(student_logits[:, start:start + CHUNK][where].float() / temperature, dim=-1)
        total = total + (log_t.exp() * (log_t - log_s)).sum()
    return total * temperature**2 / mask.sum().clamp_min(1)


def distill_loss(model: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor], temperature: float,
                 alpha: float) -> torch.Tensor:
    """(1 − α) · T² · KL + α · LM for one micro-batch (the student's forward through `model`, which may be
    wrapped by accelerate)."""
    inputs: dict[str, Any] = dict(batch) if alpha > 0 else {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, use_cache=False)
    kl = distill_kl(out.logits, teacher_hidden(teacher, batch), teacher.get_output_embeddings(),
                    scored_positions(batch), temperature)
    return (1 - alpha) * kl + alpha * out.loss if alpha > 0 else kl
