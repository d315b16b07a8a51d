"""Text and tokens for the gradient-dynamics lab: a corpus, a tokenizer built locally, a held-out probe batch.

Corpus: "tinyshakespeare" (`$WELORE_DATA/tinyshakespeare/input.txt`), "wikitext2"/"c4" or any UTF-8
text file (as `welore eval` reads them), or "hub:<dataset>[:<config>[:<split>]]" streamed from the Hugging
Face hub for online users (the "text" column, train split by default, as fine-tuning reads it).

Tokenizer: "byte" (UTF-8 bytes, vocabulary 256) and "char" (the corpus's own characters) need nothing
downloaded; anything else is a model folder or hub id handed to `AutoTokenizer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import WeLoreError
from .evaluate import Corpus, load_corpus, tokenize_corpus, tokenizer_key
from .paths import data_dir
from .textdata import load_text as load_text_or_hub

LOCAL_TOKENIZERS = ("byte", "char")


@dataclass(frozen=True)
class Tokens:
    """A tokenised corpus: the ids, the vocabulary size the model needs, and how to rebuild the tokenizer."""

    ids: np.ndarray  # (N,) int64
    vocab_size: int
    tokenizer: dict[str, Any]  # {"kind": "byte"} | {"kind": "char", "chars": ...} | {"kind": "pretrained", ...}
    corpus: str  # the data spec
    digest: str  # sha256 of the text


def load_text(data: str) -> Corpus:
    """The training text for a data spec (see the module docstring)."""
    if data == "tinyshakespeare":
        path = data_dir() / "tinyshakespeare" / "input.txt"
        if not path.is_file():
            raise WeLoreError(f"data 'tinyshakespeare': no file {path} (set WELORE_DATA to the folder holding "
                              "tinyshakespeare/input.txt, or pass a text file)")
        return load_corpus(str(path))
    return load_text_or_hub(data)  # hub:NAME[:CONFIG[:SPLIT]] streamed, else what `welore eval` reads


def tokenize(corpus: Corpus, tokenizer: str) -> Tokens:
    """Token ids of the corpus with a local byte/char tokenizer or a pretrained one."""
    if tokenizer == "byte":
        ids = np.frombuffer(corpus.text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return Tokens(ids, 256, {"kind": "byte"}, corpus.name, corpus.digest)
    if tokenizer == "char":
        chars = "".join(sorted(set(corpus.text)))
        table = {c: i for i, c in enumerate(chars)}
        ids = np.fromiter((table[c] for c in corpus.text), dtype=np.int64, count=len(corpus.text))
        return Tokens(ids, len(chars), {"kind": "char", "chars": chars}, corpus.name, corpus.digest)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as err:  # transformers raises many types for "not a tokenizer"
        first = (str(err).strip().splitlines() or [""])[0]
        raise WeLoreError(f"tokenizer {tokenizer!r}: not byte, char, a model folder or a hub id with a tokenizer "
                          f"({type(err).__name__}: {first})") from None
    ids = tokenize_corpus(tok, corpus).astype(np.int64)
    return Tokens(ids, len(tok), {"kind": "pretrained", "name": tokenizer, "key": tokenizer_key(tok)},
                  corpus.name, corpus.digest)


def split_probe(ids: np.ndarray, seqlen: int, probe_batch: int, probe_fraction: float) -> tuple[np.ndarray, torch.Tensor]:
    """Training ids and the fixed probe batch (B, T): B windows evenly spaced over the held-out tail.

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


def sample_batch(train: torch.Tensor, batch_size: int, seqlen: int, gen: torch.Generator) -> torch.Tensor:
    """Random windows (B, T) of the training ids; the generator's state is the data position."""
    starts = torch.randint(0, train.numel() - seqlen, (batch_size,), generator=gen)
    return torch.stack([train[s: s + seqlen] for s in starts.tolist()])  # (B, T)
