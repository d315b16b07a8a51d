"""Text the model writes itself: calibration and distillation data when none from the evaluation's domain is at hand.

Data-free calibration, after LLM-QAT (Liu et al. 2023, "LLM-QAT: Data-Free Quantization Aware Training for Large
Language Models", which distils a quantized model on its teacher's own generations). Documents are sampled from the
dense model, starting at its beginning-of-text token, at temperature 1: the inputs the model itself expects, in
every genre it knows, rather than one genre's. ActSVD whitening, fisher scores, the closed-form update and
distillation all read their inputs from calibration text, so all of them see the change. On the embedded model,
fisher + ActSVD at 10 % of parameters removed scores WikiText-2 perplexity 56.08 when calibrated on tiny-shakespeare
and 42.25 on 64 windows of this text; at 20 %, with the update, 109.68 and 71.78 (docs/benchmarks.md, "Recovery").

Batches are seeded by (seed, batch index), so an interrupted run resumes from the batches already written (kept in
`<out>.partial.jsonl`, one line a batch) and ends with the text an uninterrupted run writes on the same machine. The
text file, documents separated by blank lines, is written atomically when the last batch is in.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeLoreError
from ..utils import Progress, atomic_write_text, cache_dir
from .generate import positions

SEPARATOR = "\n\n"  # between documents, as WikiText's paragraphs


@dataclass(frozen=True)
class SampleConfig:
    """How much text to sample and how."""

    sequences: int = 128  # documents: 128 x 256 tokens lets 64 calibration windows of 256 rarely overlap
    tokens: int = 256  # new tokens per document; the end-of-text token is held back so every document is this long
    temperature: float = 1.0  # 1 = the model's own distribution; lower is blander and repeats itself
    top_p: float = 1.0  # nucleus sampling; 1 keeps the whole distribution (its tail is part of what the model does)
    batch_size: int = 32  # documents generated together (the seed is per batch: changing this changes the text)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("sequences", "tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise WeLoreError(f"sample {name} must be at least 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise WeLoreError(f"sample temperature must be above 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise WeLoreError(f"sample top_p must be in (0, 1], got {self.top_p}")

    @property
    def batches(self) -> int:
        return -(-self.sequences // self.batch_size)

    def key(self, model_identity: str) -> str:
        """12 hex digits naming this text: the model's identity and every setting."""
        blob = json.dumps({"model": model_identity, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def start_token(tokenizer: Any, label: str = "the model") -> int:
    """The token documents start from: beginning-of-text, else end-of-text (GPT-2 has one token for both)."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    raise WeLoreError(f"{label}: its tokenizer has neither a beginning- nor an end-of-text token to start sampling from")


def check_sampling(model: nn.Module, tokenizer: Any, config: SampleConfig) -> int:
    """Refuse what cannot be sampled before anything is written; the start token."""
    limit = positions(model)
    if limit is not None and config.tokens + 1 > limit:
        raise WeLoreError(f"sample tokens {config.tokens}: the model has {limit} positions; use at most {limit - 1}")
    return start_token(tokenizer)


def sample_batch(model: nn.Module, tokenizer: Any, config: SampleConfig, index: int) -> list[str]:
    """Documents of batch `index` (the last batch may be short), seeded by (config.seed, index): the same text
    whichever batches ran before it."""
    first = check_sampling(model, tokenizer, config)
    count = min(config.batch_size, config.sequences - index * config.batch_size)
    device = next(model.parameters()).device
    start = torch.full((count, 1), first, dtype=torch.long, device=device)  # (count, 1)
    eos = getattr(tokenizer, "eos_token_id", None)
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(config.seed * 1_000_003 + index)
        out = model.generate(input_ids=start, attention_mask=torch.ones_like(start), do_sample=True,
                             temperature=config.temperature, top_p=config.top_p, top_k=0,
                             max_new_tokens=config.tokens, min_new_tokens=config.tokens,
                             pad_token_id=eos if eos is not None else first)  # (count, 1 + tokens)
    return [tokenizer.decode(row[1:].tolist(), skip_special_tokens=False) for row in out]


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _resume(partial: Path, header: dict[str, Any]) -> list[list[str]]:
    """The batches a previous run wrote with the same settings (a torn last line is dropped and redone)."""
    if not partial.is_file():
        return []
    lines = partial.read_text(encoding="utf-8").splitlines()
    try:
        first = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        first = None
    if first != header:
        raise WeLoreError(f"{partial}: an unfinished sampling run with other settings or another model; delete it, "
                          "or rerun with its settings")
    batches: list[list[str]] = []
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict) or row.get("batch") != len(batches) or not isinstance(row.get("documents"), list):
            break
        batches.append(list(row["documents"]))
    return batches


def write_samples(model: nn.Module, tokenizer: Any, config: SampleConfig, out: Path, model_identity: str = "",
                  progress: Progress | None = None) -> Path:
    """Sample `config.sequences` documents into the text file `out` (resuming an interrupted run; see the module
    docstring). `model_identity` (its fingerprint) guards the resume against another model's half-written text."""
    out = Path(out)
    partial = _partial(out)
    check_sampling(model, tokenizer, config)
    header = {"welore_samples": 1, "model": model_identity, **asdict(config)}
    done = _resume(partial, header)
    # the partial file restarts from what was kept: a torn last line must not stay in front of the next batch
    atomic_write_text(partial, "".join(json.dumps(row) + "\n" for row in
                                       [header, *({"batch": i, "documents": d} for i, d in enumerate(done))]))
    with open(partial, "a", encoding="utf-8") as fh:
        for index in range(len(done), config.batches):
            if progress:
                progress(sum(map(len, done)), config.sequences, f"batch {index + 1}/{config.batches}")
            documents = sample_batch(model, tokenizer, config, index)
            fh.write(json.dumps({"batch": index, "documents": documents}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done.append(documents)
    atomic_write_text(out, SEPARATOR.join(d for batch in done for d in batch) + "\n")
    partial.unlink()
    if progress:
        progress(config.sequences, config.sequences, "written")
    return out


def default_samples_path(label: str, model_identity: str, config: SampleConfig) -> Path:
    """Where `sample_from` keeps a model's samples when no path is given: under the cache, named by model and key."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"
    return cache_dir() / "samples" / f"{safe}-{config.key(model_identity)}.txt"


@dataclass(frozen=True)
class Samples:
    path: Path
    documents: int
    tokens: int  # generated tokens (documents x tokens per document)
    seconds: float  # 0 when the text was already there
    reused: bool


def sample_from(spec: str | None, config: SampleConfig, out: Path | None = None, device: Any = "cpu",
                dtype: Any = "float32", progress: Progress | None = None) -> Samples:
    """Samples of the model `spec` names (None: the embedded model), loaded on `device` in `dtype`. Without `out`
    the text goes under the cache (`default_samples_path`) and a finished text there is reused."""
    from ..models import load_model, load_tokenizer, placement, resolve_model, source_fingerprint

    device, dtype = placement(str(device), str(dtype).removeprefix("torch."), "sampling")
    source = resolve_model(spec)
    identity = source_fingerprint(source)
    path = Path(out) if out is not None else default_samples_path(source.label, identity, config)
    if out is None and path.is_file() and not _partial(path).exists():
        return Samples(path, config.sequences, config.sequences * config.tokens, 0.0, True)
    began = time.perf_counter()
    write_samples(load_model(source, dtype, device), load_tokenizer(source), config, path, identity, progress)
    return Samples(path, config.sequences, config.sequences * config.tokens, time.perf_counter() - began, False)
