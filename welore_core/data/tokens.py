"""Token ids of a corpus: with a pretrained tokenizer (cached under cache/tokens by text and tokenizer), or
with a tokenizer built locally from the text (byte: UTF-8 bytes, vocabulary 256; char: the corpus's own
characters) for the dynamics lab, which needs nothing downloaded."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeLoreError
from ..utils import atomic_write_bytes, cache_dir, transformers_ready
from ..utils.hf import tokenizer_config
from .corpus import Corpus

LOCAL_TOKENIZERS = ("byte", "char")


@dataclass(frozen=True)
class Tokens:
    """A tokenised corpus: the ids, the vocabulary size a model needs, and how to rebuild the tokenizer."""

    ids: np.ndarray  # (N,) int64
    vocab_size: int
    tokenizer: dict[str, Any]  # {"kind": "byte"} | {"kind": "char", "chars": ...} | {"kind": "pretrained", ...}
    corpus: str  # the data spec
    digest: str  # sha256 of the text


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
    buffer = io.BytesIO()
    np.save(buffer, ids)
    atomic_write_bytes(path, buffer.getvalue())
    return ids


def tokenize(corpus: Corpus, tokenizer: str) -> Tokens:
    """Token ids of the corpus with a local byte/char tokenizer, or a pretrained one (a folder or hub id)."""
    if tokenizer == "byte":
        ids = np.frombuffer(corpus.text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return Tokens(ids, 256, {"kind": "byte"}, corpus.name, corpus.digest)
    if tokenizer == "char":
        chars = "".join(sorted(set(corpus.text)))
        table = {c: i for i, c in enumerate(chars)}
        ids = np.fromiter((table[c] for c in corpus.text), dtype=np.int64, count=len(corpus.text))
        return Tokens(ids, len(chars), {"kind": "char", "chars": chars}, corpus.name, corpus.digest)
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer, **tokenizer_config(Path(tokenizer)))
    except Exception as err:  # transformers raises many types for "not a tokenizer"
        first = (str(err).strip().splitlines() or [""])[0]
        raise WeLoreError(f"tokenizer {tokenizer!r}: not byte, char, a model folder or a hub id with a tokenizer "
                          f"({type(err).__name__}: {first})") from None
    ids = tokenize_corpus(tok, corpus).astype(np.int64)
    return Tokens(ids, len(tok), {"kind": "pretrained", "name": tokenizer, "key": tokenizer_key(tok)},
                  corpus.name, corpus.digest)
