"""Downstream tasks of the paper's Table 5: question → answer prompts, answer-only training targets, and
accuracy by exact match of a greedily generated answer (arXiv 2407.11239 §5.2.2).

Files are read from `<data_dir>/downstream/` (WELORE_DATA): coin_flip, StrategyQA, BoolQ, CommonsenseQA
and SVAMP, with the paper's splits: the first 70 % of coin_flip / StrategyQA / SVAMP train and the rest is
evaluated; CommonsenseQA has train and dev files; BoolQ trains on `boolq_train.jsonl` when present, else
(the shared folder holds only the dev file) on the first 70 % of dev, evaluating on the rest.

The prompt is the paper's instruction format, ending in the task's answer trigger:

    Below is a question that describes a task. Write a response that appropriately completes the request.

    ###
    [passage]

    Question: <question>

    ### Response:
    The answer is        <- the model generates from here: " yes.\\n\\n### End"

Fine-tuning targets are the answer tokens only (the prompt is masked out of the loss with -100).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import WeLoreError
from ..utils import Progress, data_dir, read_json

BLURB = "Below is a question that describes a task. Write a response that appropriately completes the request."
IGNORE = -100  # label of positions that do not count in the loss (prompt, padding)


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # under <data>/downstream
    trigger: str  # the response opens with it; generation starts right after
    pattern: str  # regex of an answer in generated text (first match wins)


@dataclass(frozen=True)
class Example:
    question: str
    answer: str  # the exact string an answer must match
    context: str = ""  # a passage (BoolQ), else empty


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("coin_flip", "coin_flip", "The answer is", r"\b(yes|no)\b"),
    Task("strategyqa", "StrategyQA", "The answer is", r"\b(yes|no)\b"),
    Task("boolq", "boolq", "Among True and False, the answer is", r"\b(true|false)\b"),
    Task("commonsenseqa", "CommonsenseQA", "Among A through E, the answer is", r"\b([A-E])\b"),
    Task("svamp", "SVAMP", "The answer (arabic numerals) is", r"-?\d+(?:\.\d+)?"),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise WeLoreError(f"task {name!r}: not one of {sorted(TASKS)}")
    return TASKS[name]


def _read(path: Path) -> Any:
    if not path.is_file():
        raise WeLoreError(f"downstream data {path}: no such file (set WELORE_DATA to the folder holding downstream/)")
    if path.suffix != ".jsonl":
        return read_json(path, "downstream data", kind=None)
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as err:
        raise WeLoreError(f"downstream data {path}: not valid JSON lines ({err})") from None


def _cut(rows: list[Any], split: str, share: float = 0.7) -> list[Any]:
    n = int(len(rows) * share)
    return rows[:n] if split == "train" else rows[n:]


def _number(value: float | str) -> str:
    text = str(float(value))
    return text[:-2] if text.endswith(".0") else text


def load_task(name: str, split: str = "train", root: Path | None = None) -> list[Example]:
    """The examples of a task's `split` ("train" or "eval"), in file order."""
    task = get_task(name)
    if split not in ("train", "eval"):
        raise WeLoreError(f"split must be 'train' or 'eval', got {split!r}")
    folder = (root or data_dir() / "downstream") / task.folder
    try:
        if name == "coin_flip":
            rows = _cut(_read(folder / "coin_flip.json")["examples"], split)
            examples = [Example(r["question"].strip(), str(r["answer"]).strip().lower()) for r in rows]
        elif name == "strategyqa":
            rows = _cut(_read(folder / "task.json")["examples"], split)
            examples = [Example(r["input"].strip(), "yes" if int(r["target_scores"]["Yes"]) == 1 else "no")
                        for r in rows]
        elif name == "boolq":
            train_file = folder / "boolq_train.jsonl"
            if train_file.is_file():
                rows = _read(train_file if split == "train" else folder / "boolq_dev.jsonl")
            else:
                rows = _cut(_read(folder / "boolq_dev.jsonl"), split)
            examples = [Example(r["question"].strip().capitalize() + "? Answer Choices: (a) True (b) False",
                                str(bool(r["answer"])), r["passage"].strip()) for r in rows]
        elif name == "commonsenseqa":
            rows = _read(folder / ("train_rand_split.jsonl" if split == "train" else "dev_rand_split.jsonl"))
            examples = [Example(r["question"]["stem"].strip() + " Answer Choices:" + "".join(
                f" ({c['label']}) {c['text']}" for c in r["question"]["choices"]), r["answerKey"]) for r in rows]
        else:  # svamp
            rows = _cut(_read(folder / "SVAMP.json"), split)
            examples = [Example(f"{r['Body'].strip()} {r['Question'].strip()}", _number(r["Answer"])) for r in rows]
    except (KeyError, TypeError, AttributeError) as err:
        raise WeLoreError(f"downstream data {folder}: unexpected layout for {name} (missing {err})") from None
    if not examples:
        raise WeLoreError(f"downstream data {folder}: no {split} examples for {name}")
    return examples


def prompt_text(task: Task, example: Example) -> str:
    """Everything the model sees before its answer (ends with the task's trigger, no trailing space)."""
    body = f"{example.context}\n\nQuestion: {example.question}\n" if example.context else \
        f"Question: {example.question}\n"
    return f"{BLURB}\n\n### \n{body}\n\n### Response:\n{task.trigger}"


def target_text(example: Example) -> str:
    """The training target after the prompt: the answer, then the paper's end marker."""
    return f" {example.answer}.\n\n### End"


def encode(tokenizer: Any, task: Task, examples: list[Example], seqlen: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: labels are the target's ids, IGNORE over the prompt. A prompt too long
    for `seqlen` loses tokens from its start, so the question's end, the trigger and the answer survive."""
    out = []
    for example in examples:
        prompt = list(tokenizer(prompt_text(task, example))["input_ids"])
        target = list(tokenizer(target_text(example), add_special_tokens=False)["input_ids"])
        if len(target) >= seqlen:
            raise WeLoreError(f"seqlen {seqlen} cannot hold the {len(target)}-token answer of task {task.name}")
        prompt = prompt[max(0, len(prompt) + len(target) - seqlen):]
        out.append((prompt + target, [IGNORE] * len(prompt) + target))
    return out


def pad_id(tokenizer: Any) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def example_batch(encoded: list[tuple[list[int], list[int]]], batch_size: int, pad: int, seed: int, step: int,
                  process: int = 0, processes: int = 1) -> dict[str, torch.Tensor]:
    """Process `process`'s right-padded share of the global batch of step `step` (batch_size x processes
    examples drawn by (seed, step): data parallel trains on what one process with the whole batch would)."""
    rng = np.random.default_rng([seed, step, 0])
    total = batch_size * processes
    picks = rng.choice(len(encoded), size=total, replace=len(encoded) < total)[process * batch_size:
                                                                             (process + 1) * batch_size]
    width = max(len(encoded[i][0]) for i in picks)
    ids = torch.full((batch_size, width), pad, dtype=torch.long)  # (B, T)
    labels = torch.full((batch_size, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((batch_size, width), dtype=torch.long)
    for row, i in enumerate(picks):
        x, y = encoded[i]
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def answer_nll(model: nn.Module, encoded: list[tuple[list[int], list[int]]], pad: int,
               batch_size: int = 8) -> tuple[float, int]:
    """Mean negative log-likelihood (nats) of the answer tokens given their prompts, and how many there are."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for first in range(0, len(encoded), batch_size):
        chunk = encoded[first: first + batch_size]
        width = max(len(x) for x, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, T)
        labels = torch.full_like(ids, IGNORE)
        mask = torch.zeros_like(ids)
        for row, (x, y) in enumerate(chunk):
            ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits  # (B, T, V)
        targets = labels[:, 1:].to(device)  # position t predicts token t+1
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                                ignore_index=IGNORE, reduction="sum")
        total += float(nll)
        count += int((targets != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1), count


def parse_answer(task: Task, text: str) -> str | None:
    """The first answer in generated text, normalised like the gold answers (None when there is none)."""
    match = re.search(task.pattern, text, flags=0 if task.name == "commonsenseqa" else re.IGNORECASE)
    if match is None:
        return None
    found = match.group(0)
    if task.name == "boolq":
        return found.capitalize()
    if task.name == "svamp":
        return _number(found)
    return found if task.name == "commonsenseqa" else found.lower()


@torch.no_grad()
def accuracy(model: nn.Module, tokenizer: Any, task: Task, examples: list[Example], seqlen: int = 512,
             max_new_tokens: int = 8, batch_size: int = 8, progress: Progress | None = None) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers: left-padded batches, `max_new_tokens` generated per prompt."""
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    was_training = model.training
    model.eval()
    correct, predictions = 0, []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first: first + batch_size]
        prompts = [list(tokenizer(prompt_text(task, e))["input_ids"])[-(seqlen - max_new_tokens):] for e in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, T), left-padded
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad)  # (B, T + new)
        for e, row in zip(chunk, out[:, width:].tolist()):
            ends = [i for i, t in enumerate(row) if t in stops]  # a finished row is padded after its end token
            text = tokenizer.decode(row[: ends[0]] if ends else row, skip_special_tokens=True)
            pred = parse_answer(task, text)
            correct += int(pred == e.answer)
            predictions.append({"answer": e.answer, "predicted": pred, "generated": text})
        if progress:
            progress(min(first + batch_size, len(examples)), len(examples), f"{task.name} accuracy")
    model.train(was_training)
    return {"task": task.name, "accuracy": correct / len(examples), "correct": correct, "total": len(examples),
            "predictions": predictions}
