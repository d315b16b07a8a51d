"""Text corpora: the one loader for evaluation, calibration, fine-tuning and the dynamics lab.

A corpus spec is one of
  wikitext2        WikiText-2 raw test split: `$WELORE_DATA/wikitext-2-raw/wiki.test.raw`, else the hub
  c4               the SparseGPT/Wanda C4 validation slice (hub)
  tinyshakespeare  `$WELORE_DATA/tinyshakespeare/input.txt`
  hub:NAME[:CONFIG[:SPLIT]]   any hub dataset's "text" column, streamed (online users)
  PATH             a UTF-8 text file
Every corpus carries the SHA-256 of its text, which is part of every cache and registry key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeLoreError
from ..utils import data_dir

DATASETS = ("wikitext2", "c4", "tinyshakespeare")
HUB_PREFIX = "hub:"
LOCAL_FILES = {"wikitext2": ("wikitext-2-raw", "wiki.test.raw"), "tinyshakespeare": ("tinyshakespeare", "input.txt")}


@dataclass(frozen=True)
class Corpus:
    name: str  # the spec it was loaded from
    text: str
    digest: str  # sha256 of the text: part of every cache and registry key


def local_path(name: str) -> Path:
    """Where a named data set is read from under $WELORE_DATA."""
    folder, file = LOCAL_FILES[name]
    return data_dir() / folder / file


def check_corpus(spec: str, what: str = "data") -> None:
    """Refuse a spec that cannot name a corpus, before any model is loaded (a missing file, a folder)."""
    if spec in DATASETS:
        return
    if spec.startswith(HUB_PREFIX):
        _hub_parts(spec, what)
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        raise WeLoreError(f"{what} {spec!r}: is a folder; pass a text file or one of {', '.join(DATASETS)}")
    if not path.is_file():
        raise WeLoreError(f"{what} {spec!r}: no such file, and not one of {', '.join(DATASETS)} or hub:NAME")


def load_corpus(spec: str, max_chars: int = 50_000_000, what: str = "data") -> Corpus:
    """The text of a corpus spec (see the module docstring); `max_chars` bounds what a hub stream reads."""
    check_corpus(spec, what)
    if spec == "wikitext2":
        local = local_path("wikitext2")
        text = _read(local, what) if local.is_file() else _hub_named("wikitext2", what)
    elif spec == "c4":
        text = _hub_named("c4", what)
    elif spec == "tinyshakespeare":
        local = local_path("tinyshakespeare")
        if not local.is_file():
            raise WeLoreError(f"{what} 'tinyshakespeare': no file {local} (set WELORE_DATA to the folder holding "
                              "tinyshakespeare/input.txt, or pass a text file)")
        text = _read(local, what)
    elif spec.startswith(HUB_PREFIX):
        text = _hub_stream(spec, max_chars, what)
    else:
        text = _read(Path(spec).expanduser(), what)
    if not text.strip():
        raise WeLoreError(f"{what} {spec!r}: the text is empty")
    return Corpus(spec, text, hashlib.sha256(text.encode()).hexdigest())


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise WeLoreError(f"{what} file {path}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise WeLoreError(f"{what} file {path}: cannot read ({err.strerror or err})") from None


def _hub_named(name: str, what: str) -> str:
    """Online users: WikiText-2 test or the C4 validation slice from the Hugging Face hub (needs `datasets`)."""
    try:
        from datasets import load_dataset

        if name == "wikitext2":
            return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
        docs = load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                            split="validation")
        return "\n\n".join(docs[:1100]["text"])  # the SparseGPT/Wanda C4 evaluation slice
    except Exception as err:
        hint = "; or set WELORE_DATA to a folder with wikitext-2-raw/wiki.test.raw" if name == "wikitext2" else ""
        raise WeLoreError(f"{what} {name!r}: could not load it from the hub ({type(err).__name__}: {err}){hint}") from None


def _hub_parts(spec: str, what: str) -> tuple[str, str | None, str]:
    parts = spec[len(HUB_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3:
        raise WeLoreError(f"{what} {spec!r}: expected hub:NAME[:CONFIG[:SPLIT]], e.g. hub:allenai/c4:en:train")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return parts[0], config, split


def _hub_stream(spec: str, max_chars: int, what: str) -> str:
    """The "text" column of a hub dataset, streamed until `max_chars` (C4-sized sets: never all of it)."""
    name, config, split = _hub_parts(spec, what)
    try:
        from datasets import load_dataset

        chunks, size = [], 0
        for row in load_dataset(name, config, split=split, streaming=True):
            text = str(row.get("text") or "")
            chunks.append(text)
            size += len(text)
            if size >= max_chars:
                break
    except Exception as err:
        raise WeLoreError(f"{what} {spec!r}: could not stream it from the hub ({type(err).__name__}: {err})") from None
    text = "\n\n".join(chunks)
    if not text.strip():
        raise WeLoreError(f"{what} {spec!r}: no text in its 'text' column")
    return text
