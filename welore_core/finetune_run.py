"""`run_finetune`: one fine-tuning run of a (compressed) model, end to end, on the Hugging Face stack.

Load the input (a compressed folder; or a dense model, compressed first when the config asks, else
trained with every layer as an N-LRC), measure it (held-out perplexity or task accuracy, plus WikiText-2
perplexity for forgetting), train it in one mode with an `accelerate.Accelerator` loop — so
`accelerate launch` spreads the same code over GPUs or nodes — checkpointing as it goes, measure again,
and write the output folder in the input's layout and dtypes. The result (trainable parameters, loss
curve, before/after metrics, peak memory, exact training-state bytes, tokens/s) is returned, written
beside the weights and recorded in the run registry. Rerunning the same call resumes from the last
checkpoint, or returns the finished result.

Peak memory: CUDA max allocated on GPU; on CPU the process's peak RSS (VmHWM) over the training loop
(reset through /proc/self/clear_refs when the kernel allows it, else the whole process's peak).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import downstream as ds
from .compress import CompressionConfig, compress_model
from .errors import WeLoreError
from .evaluate import EvalConfig, check_seqlen, load_corpus, perplexity, tokenize_corpus
from .experiments import load_tokenizer, source_fingerprint
from .finetune import FinetuneConfig
from .finetune_loop import LoopStats, Session
from .finetune_state import (LORA_BASE, RECORD, Layout, cast_like_input, check_output, compressed_layout,
                             latest_checkpoint, remove_checkpoints, save_model, save_output, stored_dtypes)
from .registry import Registry, plan_hash, run_key
from .sources import ModelSource, load_model, resolve_model
from .textdata import TextSplit, split_text, window_batch

Progress = Callable[[int, int, str], None]
VERSION = 1  # of this training loop: part of every run key


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

    def batch(self, config: FinetuneConfig, index: int, process: int) -> dict[str, torch.Tensor]:
        if self.text is not None:
            x = window_batch(self.text.train, config.seqlen, config.batch_size, config.seed, index, process)
            return {"input_ids": x, "labels": x}
        return ds.example_batch(self.train, config.batch_size, self.pad, config.seed, index, process)


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


def _start_model(source: ModelSource, config: FinetuneConfig, tokenizer: Any,
                 resume_from: Path | None = None) -> tuple[nn.Module, Layout]:
    """The model training starts from and how to write it back like the input: the input itself (a dense one
    compressed first when the config asks, else trained with every layer as an N-LRC), or a checkpoint."""
    dtypes, default = stored_dtypes(source)
    if source.kind == "compressed" and (config.err is not None or config.rankmap is not None):
        raise WeLoreError(f"{source.path} is already compressed; drop err/rankmap (they compress a dense model)")
    if resume_from is not None:
        folder = resolve_model(resume_from)
        rankmap, report = compressed_layout(folder.path) if folder.kind == "compressed" else (None, None)
        return load_model(folder), Layout(source, tokenizer, rankmap, report, dtypes, default)
    model = load_model(source)
    if source.kind == "compressed":
        rankmap, report = compressed_layout(source.path)
        return model, Layout(source, tokenizer, rankmap, report, dtypes, default)
    if config.err is None and config.rankmap is None:
        return model, Layout(source, tokenizer, None, None, dtypes, default)
    from .plan import PlanConfig, make_plan
    from .rankmap import rankmap_dict, read_rankmap
    from .spectra import compute_spectra

    if config.rankmap is not None:
        rankmap = read_rankmap(Path(config.rankmap).expanduser())
    else:
        rankmap = rankmap_dict(make_plan(compute_spectra(source if source.streamable else model),
                                         PlanConfig(err=config.err)))
    report = compress_model(model, rankmap, CompressionConfig(mode="lrc"))
    return model, Layout(source, tokenizer, rankmap, report, dtypes, default)


def run_identity(source: ModelSource, config: FinetuneConfig, data: TrainData,
                 placement: dict[str, Any] | None = None) -> dict[str, Any]:
    """What determines a run's result (save_every does not; a rank map counts by its content). `placement`
    names the device type and process count: N processes train on N times the batches."""
    settings = asdict(config)
    settings.pop("save_every")
    if config.rankmap is not None:
        from .rankmap import read_rankmap

        layers = read_rankmap(Path(config.rankmap).expanduser())["layers"]
        settings["rankmap"] = plan_hash({e["name"]: int(e["rank"]) for e in layers}, "lrc")
    return {"kind": "finetune", "fingerprint": source_fingerprint(source), "data_hash": data.digest,
            "config": settings, "version": VERSION, **(placement or {})}


def evaluate(model: nn.Module, tokenizer: Any, data: TrainData, config: FinetuneConfig,
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


def _accelerator(config: FinetuneConfig) -> Any:
    from accelerate import Accelerator

    try:
        return Accelerator(cpu=config.device == "cpu", mixed_precision=config.mixed_precision)
    except ValueError as err:  # accelerate's state is per process: one precision per process
        raise WeLoreError(f"mixed_precision {config.mixed_precision!r}: {err}") from None


def _finished(output: Path, key: str) -> dict[str, Any] | None:
    try:
        record = json.loads((output / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def run_finetune(spec: str | Path | None, config: FinetuneConfig, output: str | Path,
                 progress: Progress | None = None, registry: Registry | None = None,
                 checkpoint_dir: str | Path | None = None, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Fine-tune `spec` in `config.mode` and write the result to `output` (see the module docstring).

    Checkpoints go to `checkpoint_dir` (default `<output>.checkpoints`, beside it) and are removed once
    the output is written unless `keep_checkpoints`. `progress(step, steps, message)` is called after every
    optimizer step (and during evaluations); an exception it raises (a cancelled job) saves a checkpoint
    at that step first, so the same call later resumes there.
    """
    output = Path(output).expanduser()
    source = resolve_model(spec)
    check_output(output, source)
    tokenizer = load_tokenizer(source)
    data = load_data(tokenizer, config)
    accelerator = _accelerator(config)
    identity = run_identity(source, config, data, {"device_type": accelerator.device.type,
                                                   "processes": accelerator.num_processes})
    key = run_key(**identity)
    done = _finished(output, key)
    if done is not None:
        return {**done, "cached": True}
    root = Path(checkpoint_dir).expanduser() if checkpoint_dir else output.parent / f"{output.name}.checkpoints"
    resume = latest_checkpoint(root)
    if resume is not None and resume[1].get("key") != key:
        old = resume[1].get("config", {})
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in identity["config"].items() if old.get(k) != v]
        raise WeLoreError(f"{root} holds a checkpoint of another run ({'; '.join(diff) or 'other input, data, device or process count'}); "
                          "delete it, or write to another output")
    say: Progress = progress or (lambda done, total, message: None)
    state: dict[str, Any] = {"key": key, "config": identity["config"], "step": 0, "loss_curve": [], "before": {},
                             "tokens": 0, "train_seconds": 0.0}
    resume_from = None
    if resume is not None:
        state = resume[1]
        resume_from = root / LORA_BASE if config.mode == "lora" else resume[0] / "model"
    model, layout = _start_model(source, config, tokenizer, resume_from)
    check_seqlen(model, config.seqlen)
    model.to(accelerator.device)
    if resume is None:
        torch.manual_seed(config.seed)
        if accelerator.is_main_process:
            state["before"] = evaluate(model, tokenizer, data, config, _at(say, 0, config.steps, "before: evaluating"))
            if config.mode == "lora":  # the frozen base a resumed lora run starts from
                save_model(model, root / LORA_BASE, layout, replace=True)
        accelerator.wait_for_everyone()
    session = Session(accelerator, config, model, layout, root, state, resume[0] if resume is not None else None)
    counts = session.prepared.trainable_params, session.prepared.total_params  # lora: adapters included
    start = int(state["step"])
    stats = session.train(data, say)
    final = session.final_model()
    result: dict[str, Any] = {}
    if accelerator.is_main_process:
        cast_like_input(final, layout)  # evaluate exactly what the output folder will hold
        after = evaluate(final, tokenizer, data, config, _at(say, config.steps, config.steps, "after: evaluating"))
        result = _result(source, output, data, config, state, after, stats, counts, start, key, layout.compressed,
                         accelerator)
        save_output(final, output, layout, result)
        _record(registry or Registry.default(), identity, result, source, config)
        if not keep_checkpoints:
            remove_checkpoints(root)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return {**result, "cached": False}


def run_modes(spec: str | Path | None, base: FinetuneConfig, modes: list[str], folder: str | Path,
              progress: Progress | None = None) -> list[dict[str, Any]]:
    """The same run in each of `modes` (data, seed, schedule and steps from `base`), written to
    `folder/<mode>`, with one progress bar over all of them; results without the per-step details."""
    say: Progress = progress or (lambda done, total, message: None)
    results = []
    for i, mode in enumerate(modes):
        def each(done: int, total: int, message: str, i: int = i) -> None:
            say(i * base.steps + done, len(modes) * base.steps, message)

        result = run_finetune(spec, replace(base, mode=mode), Path(folder) / mode, each)
        results.append({k: v for k, v in result.items() if k not in ("before", "after", "config")})
    return results


def _at(say: Progress, step: int, steps: int, what: str) -> Progress:
    """Progress of an evaluation, reported at training step `step` (so totals stay the step count)."""
    return lambda i, n, message: say(step, steps, f"{what} {i}/{n}")


def _result(source: ModelSource, output: Path, data: TrainData, config: FinetuneConfig, state: dict[str, Any],
            after: dict[str, Any], stats: LoopStats, counts: tuple[int, int], start: int, key: str, compressed: bool,
            accelerator: Any) -> dict[str, Any]:
    before, curve = state["before"], state["loss_curve"]
    trainable, total = counts
    return {
        "mode": config.mode, "model": source.label, "input": str(source.path), "output": str(output),
        "data": data.name, "steps": config.steps, "steps_this_run": config.steps - start, "resumed_from": start,
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "final_loss": curve[-1][1] if curve else None, "loss_curve": curve,
        "heldout_ppl_before": before.get("heldout_ppl"), "heldout_ppl_after": after.get("heldout_ppl"),
        "wikitext_ppl_before": before.get("wikitext_ppl"), "wikitext_ppl_after": after.get("wikitext_ppl"),
        "accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
        "peak_memory_mib": stats.peak_memory_mib, "peak_memory_kind": stats.peak_memory_kind,
        "peak_rss_mib": stats.peak_rss_mib, "state_bytes": stats.state_bytes,
        "state_mib": stats.state_bytes["total"] / 2**20 if stats.state_bytes else None,
        # totals over every session of a resumed run; the figures of this session alone beside them
        "tokens": state["tokens"], "train_seconds": state["train_seconds"],
        "tokens_per_s": state["tokens"] / state["train_seconds"] if state["train_seconds"] > 0 else None,
        "session_tokens": stats.tokens, "session_seconds": stats.seconds, "step_seconds": stats.step_seconds,
        "device": str(accelerator.device), "processes": accelerator.num_processes, "compressed": compressed,
        "before": before, "after": after, "config": asdict(config), "key": key,
    }


def _record(registry: Registry, identity: dict[str, Any], result: dict[str, Any], source: ModelSource,
            config: FinetuneConfig) -> None:
    manifest_hash = "dense"
    if source.kind == "compressed":
        from .checkpoint import read_manifest

        manifest = read_manifest(source.path)
        manifest_hash = plan_hash({**manifest["factored"], **manifest["truncated"]}, manifest["mode"],
                                  manifest["act_svd"])
    registry.record(result["key"], {
        "kind": "finetune", "model": source.label, "fingerprint": identity["fingerprint"], "plan_hash": manifest_hash,
        "err": config.err, "mode": config.mode, "params": result["total_params"], "ppl": result["heldout_ppl_after"],
        "nll": result["after"].get("heldout_nll"), "dataset": result["data"], "data_hash": identity["data_hash"],
        "tokens": result["tokens"], "token_budget": config.eval_tokens, "seqlen": config.seqlen,
        "seconds": result["train_seconds"], "tokens_per_s": result["tokens_per_s"]}, result)
