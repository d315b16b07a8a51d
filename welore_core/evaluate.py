"""Perplexity over non-overlapping windows of `seqlen` tokens (the protocol of the paper's tables).

The corpus is tokenised once and cached; the first `tokens` tokens (whole windows) are scored, each
window predicting its last seqlen − 1 tokens from the ones before. Batched, under inference_mode,
without a KV cache; PPL = exp(total NLL / predicted tokens).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .devices import parse_device
from .errors import WeLoreError
from .paths import cache_dir, data_dir
from .storage import atomic_write_bytes

Progress = Callable[[int, int, str], None]
DATASETS = ("wikitext2", "c4")


@dataclass(frozen=True)
class EvalConfig:
    data: str = "wikitext2"  # "wikitext2", "c4" (hub) or a path to a plain-text file
    seqlen: int = 1024  # window length in tokens (the paper uses 1024-4096 depending on the table)
    tokens: int | None = None  # token budget for quick previews; None = the whole corpus
    batch_size: int = 4  # windows per forward pass
    device: str = "auto"  # "auto" = cuda when available

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise WeLoreError(f"seqlen must be at least 2, got {self.seqlen}")
        if self.tokens is not None and self.tokens < self.seqlen:
            raise WeLoreError(f"token budget {self.tokens} is smaller than one window of seqlen {self.seqlen}")
        if self.batch_size < 1:
            raise WeLoreError(f"batch_size must be at least 1, got {self.batch_size}")
        parse_device(self.device, "eval device")

    def torch_device(self) -> torch.device:
        return parse_device(self.device, "eval device")


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


@dataclass(frozen=True)
class Corpus:
    name: str  # "wikitext2", "c4" or the file's path
    text: str
    digest: str  # sha256 of the text: part of every cache and registry key


def load_corpus(data: str) -> Corpus:
    """The evaluation text: WikiText-2 test (local copy, else the hub), C4 validation (hub), or a file."""
    if data == "wikitext2":
        local = data_dir() / "wikitext-2-raw" / "wiki.test.raw"
        text = local.read_text(encoding="utf-8") if local.is_file() else _hub_text("wikitext2")
    elif data == "c4":
        text = _hub_text("c4")
    else:
        path = Path(data).expanduser()
        if not path.is_file():
            raise WeLoreError(f"data {data!r}: not one of {DATASETS} and no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise WeLoreError(f"data file {path}: not UTF-8 text ({err})") from None
    if not text.strip():
        raise WeLoreError(f"data {data!r}: the text is empty")
    return Corpus(data, text, hashlib.sha256(text.encode()).hexdigest())


def _hub_text(name: str) -> str:
    """Online users: the same sets from the Hugging Face hub (needs `datasets`)."""
    try:
        from datasets import load_dataset

        if name == "wikitext2":
            return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
        docs = load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                            split="validation")
        return "\n\n".join(docs[:1100]["text"])  # the SparseGPT/Wanda C4 evaluation slice
    except Exception as err:
        hint = "; or set WELORE_DATA to a folder with wikitext-2-raw/wiki.test.raw" if name == "wikitext2" else ""
        raise WeLoreError(f"data {name!r}: could not load it from the hub ({type(err).__name__}: {err}){hint}") from None


def tokenizer_key(tokenizer: Any) -> str:
    """Identifies a tokenizer's behaviour (its serialised fast tokenizer, else its vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tokenize_corpus(tokenizer: Any, corpus: Corpus) -> np.ndarray:
    """Token ids of the whole corpus (int32), cached under cache/tokens by text and tokenizer."""
    path = cache_dir() / "tokens" / f"{corpus.digest[:16]}-{tokenizer_key(tokenizer)}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass  # damaged: tokenise again
    ids = np.asarray(tokenizer(corpus.text, add_special_tokens=False)["input_ids"], dtype=np.int32)
    import io

    buffer = io.BytesIO()
    np.save(buffer, ids)
    atomic_write_bytes(path, buffer.getvalue())
    return ids


def windows_of(ids: np.ndarray | torch.Tensor, config: EvalConfig) -> torch.Tensor:
    """The non-overlapping evaluation windows (n, seqlen) within the token budget."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)
    budget = ids.numel() if config.tokens is None else min(ids.numel(), config.tokens)
    n = budget // config.seqlen
    if n == 0:
        raise WeLoreError(f"{ids.numel()} tokens is fewer than one window of seqlen {config.seqlen}")
    return ids[: n * config.seqlen].view(n, config.seqlen)


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
    windows = windows_of(ids, config)
    device = next(model.parameters()).device
    total_nll, predicted = 0.0, 0
    start = time.perf_counter()
    model.eval()
    parts = _decoder_and_head(model)
    with torch.inference_mode():
        for first in range(0, windows.shape[0], config.batch_size):
            batch = windows[first: first + config.batch_size].to(device)  # (B, L)
            if parts is not None and first == 0 and not _chunked_matches(model, parts, batch[:1, :64], chunk):
                parts = None
            total_nll += _nll_sum(model, parts, batch, chunk)
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


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's position embeddings cover, when its config says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_seqlen(model: nn.Module, seqlen: int, what: str = "seqlen") -> None:
    limit = max_positions(model)
    if limit is not None and seqlen > limit:
        raise WeLoreError(f"{what} {seqlen} is longer than the model's {limit} positions")


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
