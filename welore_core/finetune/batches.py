"""The material of a fine-tuning run: training batches and what is measured before and after training.

Text: random windows of the training part of the corpus (the held-out tail is never trained on), drawn by
(seed, step, process) so a resumed run sees the same batches. Task: prompts with answer-only targets.
Measured: held-out perplexity (text: the tail; task: the answer tokens of the eval examples), task accuracy,
and WikiText-2 perplexity for forgetting.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import TextSplit, load_corpus, sample_windows, split_text, tokenize_corpus
from ..data import downstream as ds
from ..evaluation import EvalConfig, perplexity
from ..utils import Progress
from .config import FinetuneConfig


@dataclass
class TrainData:
    """The training batches and held-out material of a run: a text split or a downstream task."""

    name: str
    digest: str
    text: TextSplit | None = None
    task: ds.Task | None = None
    train: list[tuple[list[int], list[int]]] = field(default_factory=list)  # encoded task examples
    evals: list[ds.Example] = field(default_factory=list)
    pad: int = 0

    def batch(self, config: FinetuneConfig, index: int, process: int = 0, processes: int = 1) -> dict[str, torch.Tensor]:
        """Process `process`'s share of global micro-batch `index`: the global batch (batch_size x processes rows)
        is drawn by (seed, index), so N processes train on exactly the rows one process with N x batch_size
        would, and one process draws what it always did."""
        rows = slice(process * config.batch_size, (process + 1) * config.batch_size)
        if self.text is not None:
            x = sample_windows(self.text.train, config.seqlen, config.batch_size * processes, [config.seed, index, 0])
            return {"input_ids": x[rows], "labels": x[rows]}
        return ds.example_batch(self.train, config.batch_size, self.pad, config.seed, index, process, processes)


def load_data(tokenizer: Any, config: FinetuneConfig) -> TrainData:
    if config.data:
        split = split_text(tokenizer, config.data, config.heldout, config.seqlen)
        return TrainData(config.data, split.digest, text=split)
    task = ds.get_task(config.task)
    train, evals = ds.load_task(task.name, "train"), ds.load_task(task.name, "eval")
    blob = json.dumps([asdict(e) for e in train + evals]).encode()
    return TrainData(f"task:{task.name}", hashlib.sha256(blob).hexdigest(), task=task,
                     train=ds.encode(tokenizer, task, train, config.seqlen), evals=evals[: config.eval_examples],
                     pad=ds.pad_id(tokenizer))


def measure(model: nn.Module, tokenizer: Any, data: TrainData, config: FinetuneConfig,
            report: Progress | None = None) -> dict[str, Any]:
    """Held-out perplexity (text: the held-out tail; task: the answers of the eval examples), task accuracy,
    and WikiText-2 perplexity when `forget_tokens` is set."""
    out: dict[str, Any] = {}
    if data.text is not None:
        ev = EvalConfig(data=data.name, seqlen=config.seqlen, tokens=config.eval_tokens, batch_size=config.batch_size)
        r = perplexity(model, data.text.heldout, ev, report)
        out.update(heldout_ppl=r.ppl, heldout_nll=r.nll, heldout_tokens=r.tokens)
    else:
        assert data.task is not None
        encoded = ds.encode(tokenizer, data.task, data.evals, config.seqlen)
        nll, count = ds.answer_nll(model, encoded, data.pad, config.batch_size)
        acc = ds.accuracy(model, tokenizer, data.task, data.evals, config.seqlen, progress=report)
        out.update(heldout_ppl=float(np.exp(nll)), heldout_nll=nll, heldout_tokens=count, accuracy=acc["accuracy"],
                   correct=acc["correct"], examples=acc["total"], predictions=acc["predictions"][:20])
    if config.forget_tokens:
        wikitext = load_corpus("wikitext2")
        if data.text is not None and data.digest == wikitext.digest:
            # training on WikiText-2 test text: its perplexity measures fitting, not forgetting
            out["wikitext_note"] = "skipped: the training data is the WikiText-2 test split"
            return out
        ids = tokenize_corpus(tokenizer, wikitext)
        ev = EvalConfig(data="wikitext2", seqlen=config.seqlen, tokens=config.forget_tokens,
                        batch_size=config.batch_size)
        out["wikitext_ppl"] = perplexity(model, ids, ev, report).ppl
    return out
