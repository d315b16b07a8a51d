"""Windows of token ids: the non-overlapping evaluation windows, the one seeded sampler of random training
and calibration windows, and the held-out splits (a text's tail for fine-tuning, the dynamics probe batch).

Random windows are drawn by a generator seeded with a key such as (seed, step, process): a resumed run
sees exactly the batches an uninterrupted one would have seen, with no data-loader state to save, and
each `accelerate launch` process draws its own windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import WeLoreError
from .corpus import load_corpus
from .tokens import tokenize_corpus


def windows_of(ids: np.ndarray | torch.Tensor, seqlen: int, budget: int | None = None) -> torch.Tensor:
    """The non-overlapping windows (n, seqlen) of the first `budget` tokens (all of them when None)."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)
    budget = ids.numel() if budget is None else min(ids.numel(), budget)
    n = budget // seqlen
    if n == 0:
        raise WeLoreError(f"{ids.numel()} tokens is fewer than one window of seqlen {seqlen}")
    return ids[: n * seqlen].view(n, seqlen)


def sample_windows(ids: np.ndarray, seqlen: int, count: int, key: Sequence[int]) -> torch.Tensor:
    """`count` random windows (count, seqlen) of `ids`, every start in [0, len - seqlen] equally likely,
    drawn by a generator seeded with `key` (the same key gives the same windows)."""
    if ids.size < seqlen:
        raise WeLoreError(f"{ids.size} tokens is fewer than one window of seqlen {seqlen}")
    rng = np.random.default_rng(list(key))
    starts = rng.integers(0, ids.size - seqlen + 1, size=count)
    rows = np.stack([ids[s: s + seqlen] for s in starts])  # (count, seqlen)
    return torch.as_tensor(rows, dtype=torch.long)


@dataclass(frozen=True)
class TextSplit:
    """Token ids of a corpus, split into the training part and the held-out tail."""

    name: str  # the corpus spec
    digest: str  # sha256 of the text: part of the run identity
    train: np.ndarray  # (n_train,) int32
    heldout: np.ndarray  # (n_heldout,) int32


def split_text(tokenizer: Any, data: str, heldout: float, seqlen: int) -> TextSplit:
    """Tokenise `data` (cached) and split off the held-out tail; both parts must hold a window of `seqlen`,
    and no training window can overlap the tail."""
    corpus = load_corpus(data)
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


def split_probe(ids: np.ndarray, seqlen: int, probe_batch: int, probe_fraction: float) -> tuple[np.ndarray, torch.Tensor]:
    """Training ids and a fixed probe batch (B, T): B windows evenly spaced over the held-out tail.

    The tail is never trained on, so the probe measures the gradient of data the model has not fitted;
    evenly spaced windows need no random numbers, so the probe is the same in every run of a corpus.
    """
    held = max(int(len(ids) * probe_fraction), probe_batch * seqlen)
    train = ids[: len(ids) - held]
    if len(train) < 4 * (seqlen + 1):
        raise WeLoreError(f"corpus of {len(ids)} tokens is too short for seqlen {seqlen} and a probe of "
                          f"{probe_batch} windows (need at least {4 * (seqlen + 1) + held} tokens)")
    tail = ids[len(ids) - held:]
    starts = np.linspace(0, len(tail) - seqlen, probe_batch).astype(np.int64)
    probe = torch.from_numpy(np.stack([tail[s: s + seqlen] for s in starts]))  # (B, T)
    return train, probe
