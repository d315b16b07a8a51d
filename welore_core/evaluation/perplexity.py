"""Perplexity over non-overlapping windows of `seqlen` tokens (the protocol of the paper's tables).

The corpus is tokenised once and cached (`welore_core.data`); the first `tokens` tokens (whole windows)
are scored, each window predicting its last seqlen − 1 tokens from the ones before. Batched, under
inference_mode, without a KV cache; PPL = exp(total NLL / predicted tokens).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import windows_of
from ..errors import WeLoreError
from ..models import check_seqlen, first_non_finite, placement
from ..utils import Progress, parse_device


@dataclass(frozen=True)
class EvalConfig:
    data: str = "wikitext2"  # a corpus spec (welore_core.data): wikitext2, c4, tinyshakespeare, hub:NAME or a file
    seqlen: int = 1024  # window length in tokens (the paper uses 1024-4096 depending on the table)
    tokens: int | None = None  # token budget for quick previews; None = the whole corpus
    batch_size: int = 4  # windows per forward pass
    device: str = "auto"  # "auto" = cuda when available
    weights_dtype: str = "auto"  # auto = bfloat16 on a GPU, float32 on the CPU (models.placement)

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise WeLoreError(f"seqlen must be at least 2, got {self.seqlen}")
        if self.tokens is not None and self.tokens < 1:
            raise WeLoreError(f"token budget must be positive, got {self.tokens}")
        if self.batch_size < 1:
            raise WeLoreError(f"batch_size must be at least 1, got {self.batch_size}")
        placement(self.device, self.weights_dtype, "eval")

    def torch_device(self) -> torch.device:
        return parse_device(self.device, "eval device")

    def torch_dtype(self) -> torch.dtype:
        """The dtype the model's weights are loaded in (auto resolved for the device)."""
        return placement(self.device, self.weights_dtype, "eval")[1]

    def check_budget(self) -> None:
        """The budget holds one window (checked after the model's position limit, which is the likelier mistake
        when both fail: `--seqlen 100000`)."""
        if self.tokens is not None and self.tokens < self.seqlen:
            raise WeLoreError(f"token budget {self.tokens} is smaller than one window of seqlen {self.seqlen}")


@dataclass
class EvalResult:
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # tokens in the evaluated windows
    windows: int
    seconds: float
    tokens_per_s: float
    dataset: str
    seqlen: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perplexity(model: nn.Module, ids: np.ndarray | torch.Tensor, config: EvalConfig | None = None,
               progress: Progress | None = None, dataset: str = "tokens", chunk: int = 512) -> EvalResult:
    """Perplexity of `model` on token ids, scored in non-overlapping windows.

    The output head is applied `chunk` predicted tokens at a time, so the (B, L, vocab) logits tensor is
    never materialised (a 49k vocabulary at B=4, L=1024 would be 0.8 GB in float32). Models whose head is
    not a plain projection of the decoder's last hidden state (logit soft-capping, scaling) are detected
    on the first batch and scored from their full logits instead.
    """
    config = config or EvalConfig()
    check_seqlen(model, config.seqlen)
    config.check_budget()
    windows = windows_of(ids, config.seqlen, config.tokens)
    device = next(model.parameters()).device
    total_nll, predicted = 0.0, 0
    start = time.perf_counter()
    model.eval()
    parts = _decoder_and_head(model)
    with torch.inference_mode(), fast_float32(device):
        for first in range(0, windows.shape[0], config.batch_size):
            batch = windows[first: first + config.batch_size].to(device)  # (B, L)
            if parts is not None and first == 0 and not _chunked_matches(model, parts, batch[:1, :64], chunk):
                parts = None
            nll = _nll_sum(model, parts, batch, chunk)
            if not math.isfinite(nll):
                raise non_finite_loss(model, f"NLL {nll} on windows {first}-{first + batch.shape[0] - 1}")
            total_nll += nll
            predicted += batch.shape[0] * (config.seqlen - 1)
            if progress:
                progress(min(first + config.batch_size, windows.shape[0]), windows.shape[0], "windows")
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mean = total_nll / predicted
    tokens = windows.numel()
    return EvalResult(math.exp(mean) if mean < 700 else float("inf"), mean, tokens, windows.shape[0], seconds,
                      tokens / seconds if seconds > 0 else float("inf"), dataset, config.seqlen)


@contextmanager
def fast_float32(device: torch.device) -> Iterator[None]:
    """TF32 tensor cores for float32 matmuls on a GPU while scoring (float32 accumulation, 10-bit mantissa
    products: perplexity moves by far less than the 0.5 % the bench allows); nothing changes on the CPU."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def non_finite_loss(model: nn.Module, what: str) -> WeLoreError:
    """The error of a loss that is NaN or inf: the first weight holding NaN or inf when the weights are the
    cause, else the forward pass overflowing in the model's dtype."""
    bad = first_non_finite(model)
    if bad is not None:
        return WeLoreError(f"the loss is not finite ({what}): weight {bad} holds NaN or inf values")
    dtype = next(model.parameters()).dtype
    return WeLoreError(f"the loss is not finite ({what}) although every weight is finite: the forward pass "
                       f"overflows in {str(dtype).removeprefix('torch.')}; evaluate in float32")


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    decoder = getattr(model, str(getattr(model, "base_model_prefix", "")), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (decoder, head) if isinstance(decoder, nn.Module) and isinstance(head, nn.Module) else None


def _nll_sum(model: nn.Module, parts: tuple[nn.Module, nn.Module] | None, batch: torch.Tensor, chunk: int) -> float:
    """Summed next-token NLL of a batch of windows (B, L) over its B·(L−1) predictions."""
    targets = batch[:, 1:].reshape(-1)  # (B·(L-1),)
    if parts is None:
        logits = model(input_ids=batch, use_cache=False).logits  # (B, L, V)
        return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets, reduction="sum"))
    decoder, head = parts
    hidden = decoder(input_ids=batch, use_cache=False).last_hidden_state[:, :-1]  # (B, L-1, H)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    total = 0.0
    for i in range(0, hidden.shape[0], chunk):
        logits = head(hidden[i: i + chunk]).float()  # (chunk, V)
        total += float(F.cross_entropy(logits, targets[i: i + chunk], reduction="sum"))
    return total


def _chunked_matches(model: nn.Module, parts: tuple[nn.Module, nn.Module], window: torch.Tensor, chunk: int) -> bool:
    """Does decoder → head reproduce the model's own logits? (False for soft-capped or scaled heads.)"""
    try:
        chunked = _nll_sum(model, parts, window, chunk)
    except Exception:  # a decoder that cannot be called on its own
        return False
    full = _nll_sum(model, None, window, chunk)
    return abs(chunked - full) <= 1e-4 * max(1.0, abs(full))
