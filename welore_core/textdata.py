"""Training text for continual fine-tuning (arXiv 2407.11239 §4, §5.2.2): one token stream, split in two.

The text is a local file, WikiText-2 (the local copy), or a hub dataset for online users
(`hub:NAME[:CONFIG[:SPLIT]]`, streamed, its "text" column). Its tokens are split into a training part and
a held-out *tail* (default 10 %), so no training window ever overlaps the text the held-out perplexity
is measured on. A training batch is a set of random windows of the training part drawn from a generator
seeded by (seed, step, process): a resumed run sees exactly the batches an uninterrupted one would have
seen, with no data-loader state to save, and each `accelerate launch` process draws its own windows.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import WeLoreError
from .evaluate import Corpus, load_corpus, tokenize_corpus

HUB_PREFIX = "hub:"


@dataclass(frozen=True)
class TextSplit:
    """Token ids of a corpus, split into the training part and the held-out tail."""

    name: str  # what the user passed: a path, "wikitext2" or "hub:..."
    digest: str  # sha256 of the text: part of the run identity
    train: np.ndarray  # (n_train,) int32
    heldout: np.ndarray  # (n_heldout,) int32


def load_text(data: str, max_chars: int = 50_000_000) -> Corpus:
    """The training text: `hub:NAME[:CONFIG[:SPLIT]]` (online), else whatever `evaluate.load_corpus` reads."""
    if not data.startswith(HUB_PREFIX):
        return load_corpus(data)
    parts = data[len(HUB_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3:
        raise WeLoreError(f"data {data!r}: expected hub:NAME[:CONFIG[:SPLIT]], e.g. hub:allenai/c4:en:train")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), \
        (parts[2] if len(parts) > 2 and parts[2] else "train")
    try:
        from datasets import load_dataset

        chunks, size = [], 0
        for row in load_dataset(name, config, split=split, streaming=True):  # C4-sized sets: never all of it
            text = str(row.get("text") or "")
            chunks.append(text)
            size += len(text)
            if size >= max_chars:
                break
    except Exception as err:
        raise WeLoreError(f"data {data!r}: could not stream it from the hub ({type(err).__name__}: {err})") from None
    text = "\n\n".join(chunks)
    if not text.strip():
        raise WeLoreError(f"data {data!r}: no text in its 'text' column")
    return Corpus(data, text, hashlib.sha256(text.encode()).hexdigest())


def split_text(tokenizer: Any, data: str, heldout: float, seqlen: int) -> TextSplit:
    """Tokenise `data` (cached) and split off the held-out tail; both parts must hold a window of `seqlen`."""
    corpus = load_text(data)
    ids = tokenize_corpus(tokenizer, corpus)
    n_held = round(ids.size * heldout)
    train, held = ids[: ids.size - n_held], ids[ids.size - n_held:]
    if train.size <= seqlen:
        raise WeLoreError(f"data {data!r}: {train.size} training tokens, need more than seqlen {seqlen} "
                          f"(the text has {ids.size} tokens, {heldout:.0%} held out)")
    if held.size < seqlen:
        raise WeLoreError(f"data {data!r}: the held-out {heldout:.0%} is {held.size} tokens, less than one window "
                          f"of seqlen {seqlen}; use more text, a larger held-out fraction or a shorter seqlen")
    return TextSplit(data, corpus.digest, train, held)


def window_batch(train: np.ndarray, seqlen: int, batch_size: int, seed: int, step: int,
                 process: int = 0) -> torch.Tensor:
    """Random windows (batch_size, seqlen) of the training tokens for optimizer step `step` (0-based)."""
    rng = np.random.default_rng([seed, step, process])
    starts = rng.integers(0, train.size - seqlen + 1, size=batch_size)
    rows = np.stack([train[s: s + seqlen] for s in starts])  # (B, L)
    return torch.as_tensor(rows, dtype=torch.long)
