"""`run_finetune`: one fine-tuning run of a (compressed) model, end to end, on the Hugging Face stack.

Load the input (a compressed folder; or a dense model, compressed first when the config asks, else
trained with every layer as an N-LRC), measure it (`batches.measure`), train it in one mode with an
`accelerate.Accelerator` loop — so `accelerate launch` spreads the same code over GPUs or nodes —
checkpointing as it goes, measure again, and write the output folder in the input's layout and dtypes.
The `FinetuneResult` is returned, written beside the weights and recorded in the run registry. Rerunning
the same call resumes from the last checkpoint, or returns the finished result.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..compression.apply import CompressionConfig, compress_to, read_report
from ..compression.plan import PlanConfig, plan_target, read_rankmap, target_ranks
from ..errors import WeLoreError
from ..evaluation import Registry, folder_plan_hash, plan_hash, run_key, source_fields
from ..models import (ModelSource, check_seqlen, check_source_seqlen, load_model, load_tokenizer, resolve_model,
                      source_fingerprint, stored_dtypes)
from ..utils import Progress, at_step, read_json, silent
from ..utils import check_output as check_path
from .batches import TrainData, load_data, measure
from .config import FinetuneConfig
from .distill import check_teacher, teacher_source
from .folders import (LORA_BASE, RECORD, Layout, cast_like_input, check_output, latest_checkpoint, remove_checkpoints,
                      save_model, save_output)
from .loop import LoopStats, Session
from .sharded import check_sharding
from .result import FinetuneResult

VERSION = 1  # of this training loop: part of every run key


def _start_model(source: ModelSource, config: FinetuneConfig, tokenizer: Any, device: torch.device,
                 resume_from: Path | None = None) -> tuple[nn.Module, Layout]:
    """The model training starts from and how to write it back like the input: the input itself (a dense one
    compressed first when the config asks, else trained with every layer as an N-LRC), or a checkpoint."""
    dtypes, default = stored_dtypes(source.safetensors_files())
    dtype = config.placement()[1]
    compress_first = config.err is not None or config.params is not None or config.rankmap is not None
    if source.kind == "compressed" and compress_first:
        raise WeLoreError(f"{source.path} is already compressed; drop err/params/rankmap (they compress a dense model)")
    if resume_from is not None:
        folder = resolve_model(resume_from)
        report = read_report(folder.path) if folder.kind == "compressed" else None
        return load_model(folder, dtype, device), Layout(source, tokenizer, report, dtypes, default)
    model = load_model(source, dtype, device)
    if source.kind == "compressed":
        return model, Layout(source, tokenizer, read_report(source.path), dtypes, default)
    if not compress_first:
        return model, Layout(source, tokenizer, None, dtypes, default)
    plan = (PlanConfig(err=config.err) if config.err is not None else
            PlanConfig(params=config.params) if config.params is not None else None)
    target = plan_target(source if source.streamable else model, plan=plan, rankmap=config.rankmap)
    mode = "all" if config.params is not None else "lrc"  # a parameter budget counts every layer the smaller way
    report = compress_to(model, target, CompressionConfig(mode=mode, device=str(device)))
    return model, Layout(source, tokenizer, report, dtypes, default)


def run_identity(source: ModelSource, config: FinetuneConfig, data: TrainData,
                 placement: dict[str, Any] | None = None, teacher: ModelSource | None = None) -> dict[str, Any]:
    """What determines a run's result (save_every does not; a rank map counts by its content, a teacher by its
    weights). `placement` names the device type and process count: N processes train on N times the batches."""
    settings = asdict(config)
    settings.pop("save_every")
    if not settings["fsdp"]:
        settings.pop("fsdp")  # runs recorded before sharding existed keep their keys
    if teacher is not None:
        settings["teacher"] = source_fingerprint(teacher)
    if config.rankmap is not None:
        rankmap = read_rankmap(Path(config.rankmap).expanduser())
        settings["rankmap"] = plan_hash(target_ranks(rankmap), "lrc")
    return {"kind": "finetune", "fingerprint": source_fingerprint(source), "data_hash": data.digest,
            "config": settings, "version": VERSION, **(placement or {})}


def _accelerator(config: FinetuneConfig) -> Any:
    """accelerate's Accelerator for this run. Its state is per process and fixes one precision; a single process
    (the dashboard's server, a notebook) that runs a second fine-tune in another precision starts it afresh."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    settings = {"cpu": config.device == "cpu", "mixed_precision": config.precision()}
    device = config.placement()[0]
    if device.type == "cuda" and device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(device)  # accelerate places a single process on the current device: make it this one
    try:
        return Accelerator(**settings)
    except ValueError as err:
        if PartialState().num_processes > 1:  # under `accelerate launch`: every process must agree
            raise WeLoreError(f"mixed_precision {config.mixed_precision!r}: {err}") from None
    AcceleratorState._reset_state()
    return Accelerator(**settings)


def _finished(output: Path, key: str) -> FinetuneResult | None:
    try:
        record = read_json(output / RECORD, "run record")
    except WeLoreError:
        return None
    return FinetuneResult.from_record(record, cached=True) if record.get("key") == key else None


def run_finetune(spec: str | Path | None, config: FinetuneConfig, output: str | Path,
                 progress: Progress | None = None, registry: Registry | None = None,
                 checkpoint_dir: str | Path | None = None, keep_checkpoints: bool = False) -> FinetuneResult:
    """Fine-tune `spec` in `config.mode` and write the result to `output` (see the module docstring).

    Checkpoints go to `checkpoint_dir` (default `<output>.checkpoints`, beside it) and are removed once
    the output is written unless `keep_checkpoints`. `progress(step, steps, message)` is called after every
    optimizer step (and during evaluations); an exception it raises (a cancelled job) saves a checkpoint
    at that step first, so the same call later resumes there.
    """
    output = Path(output).expanduser()
    source = resolve_model(spec)
    check_output(output, source)
    root = Path(checkpoint_dir).expanduser() if checkpoint_dir else output.parent / f"{output.name}.checkpoints"
    check_path(root, folder=True, protected=source.protected(), what="checkpoint folder")
    check_source_seqlen(source, config.seqlen)
    config.check_budgets()
    check_sharding(config)
    tokenizer = load_tokenizer(source)
    data = load_data(tokenizer, config)
    compresses = config.err is not None or config.params is not None or config.rankmap is not None
    teaching = teacher_source(source, config.teacher, compresses) if config.distill else None
    accelerator = _accelerator(config)
    identity = run_identity(source, config, data, {"device_type": accelerator.device.type,
                                                   "processes": accelerator.num_processes}, teaching)
    key = run_key(**identity)
    done = _finished(output, key)
    if done is not None:
        return done
    resume = latest_checkpoint(root)
    if resume is not None and resume[1].get("key") != key:
        old = resume[1].get("config", {})
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in identity["config"].items() if old.get(k) != v]
        what = "; ".join(diff) or "other input, data, device or process count"
        raise WeLoreError(f"{root} holds a checkpoint of another run ({what}); "
                          "delete it, or write to another output")
    say: Progress = progress or silent
    state: dict[str, Any] = {"key": key, "config": identity["config"], "step": 0, "loss_curve": [], "before": {},
                             "tokens": 0, "train_seconds": 0.0}
    resume_from = None
    if resume is not None:
        state = resume[1]
        if not config.fsdp:  # a sharded run starts from the input again; its shards replace every weight
            resume_from = root / LORA_BASE if config.mode == "lora" else resume[0] / "model"
    # sharded: the whole model stays on the CPU; fully_shard moves each process's shards to its device
    place = torch.device("cpu") if config.fsdp else accelerator.device
    with _discarded_unless_checkpointed(root):
        model, layout = _start_model(source, config, tokenizer, place, resume_from)
        check_seqlen(model, config.seqlen)
        model.to(place)
        if resume is None:
            torch.manual_seed(config.seed)
            if accelerator.is_main_process:
                before = at_step(say, 0, config.steps, "before: evaluating")
                state["before"] = measure(model, tokenizer, data, config, before)
                if config.mode == "lora" and not config.fsdp:  # the frozen base a resumed lora run starts from
                    save_model(model, root / LORA_BASE, layout, replace=True)
            accelerator.wait_for_everyone()
        teacher = None
        if teaching is not None:  # in the weights dtype, on the student's device, never trained
            teacher = load_model(teaching, config.placement()[1], accelerator.device).eval().requires_grad_(False)
            check_teacher(teacher, model, teaching.label)
        session = Session(accelerator, config, model, layout, root, state, resume[0] if resume is not None else None,
                          teacher)
        counts = session.prepared.trainable_params, session.prepared.total_params  # lora: adapters included
        start = int(state["step"])
        stats = session.train(data, say)
        final = session.final_model()
        result = None
        if accelerator.is_main_process:
            assert final is not None  # sharded: gathered on the main process
            cast_like_input(final, layout)  # evaluate exactly what the output folder will hold
            evaluating = at_step(say, config.steps, config.steps, "after: evaluating")
            after = measure(final, tokenizer, data, config, evaluating)
            result = _result(source, output, data, config, state, after, stats, counts, start, key,
                             layout.compressed, accelerator)
            save_output(final, output, layout, result.record())
            _record(registry or Registry.default(), identity, result, source, config)
            if not keep_checkpoints:
                remove_checkpoints(root)
        accelerator.wait_for_everyone()
        accelerator.free_memory()
        if result is None:  # another process of `accelerate launch`: the main process wrote the result
            result = _finished(output, key) or _result(source, output, data, config, state, {}, stats, counts, start,
                                                        key, layout.compressed, accelerator)
            result.cached = False
        return result


@contextmanager
def _discarded_unless_checkpointed(root: Path) -> Iterator[None]:
    """A run that fails before its first checkpoint (a bad setting found at step 1, a full disk) leaves nothing
    in `root`: not the LoRA base it saved, not an empty folder. A later failure keeps the checkpoints to resume."""
    try:
        yield
    except BaseException:
        if latest_checkpoint(root) is None:
            remove_checkpoints(root)
        raise


def run_modes(spec: str | Path | None, base: FinetuneConfig, modes: list[str], folder: str | Path,
              progress: Progress | None = None) -> list[dict[str, Any]]:
    """The same run in each of `modes` (data, seed, schedule and steps from `base`), written to
    `folder/<mode>`, with one progress bar over all of them; results without the per-step details."""
    say: Progress = progress or silent
    results = []
    for i, mode in enumerate(modes):
        def each(done: int, total: int, message: str, i: int = i) -> None:
            say(i * base.steps + done, len(modes) * base.steps, message)

        results.append(run_finetune(spec, replace(base, mode=mode), Path(folder) / mode, each).summary())
    return results


def _result(source: ModelSource, output: Path, data: TrainData, config: FinetuneConfig, state: dict[str, Any],
            after: dict[str, Any], stats: LoopStats, counts: tuple[int, int], start: int, key: str, compressed: bool,
            accelerator: Any) -> FinetuneResult:
    before, curve = state["before"], state["loss_curve"]
    trainable, total = counts
    return FinetuneResult(
        mode=config.mode, model=source.label, input=str(source.path), output=str(output), data=data.name,
        steps=config.steps, steps_this_run=config.steps - start, resumed_from=start, trainable_params=trainable,
        total_params=total, trainable_fraction=trainable / total, final_loss=curve[-1][1] if curve else None,
        loss_curve=curve, heldout_ppl_before=before.get("heldout_ppl"), heldout_ppl_after=after.get("heldout_ppl"),
        wikitext_ppl_before=before.get("wikitext_ppl"), wikitext_ppl_after=after.get("wikitext_ppl"),
        accuracy_before=before.get("accuracy"), accuracy_after=after.get("accuracy"),
        peak_memory_mib=stats.peak_memory_mib, peak_memory_kind=stats.peak_memory_kind,
        peak_rss_mib=stats.peak_rss_mib, state_bytes=stats.state_bytes,
        state_mib=stats.state_bytes["total"] / 2**20 if stats.state_bytes else None,
        # totals over every session of a resumed run; the figures of this session alone beside them
        tokens=state["tokens"], train_seconds=state["train_seconds"],
        tokens_per_s=state["tokens"] / state["train_seconds"] if state["train_seconds"] > 0 else None,
        session_tokens=stats.tokens, session_seconds=stats.seconds, step_seconds=stats.step_seconds,
        device=str(accelerator.device), processes=accelerator.num_processes, compressed=compressed,
        before=before, after=after, config=asdict(config), key=key)


def _record(registry: Registry, identity: dict[str, Any], result: FinetuneResult, source: ModelSource,
            config: FinetuneConfig) -> None:
    registry.record(result.key, {
        "kind": "finetune", "model": source.label, "fingerprint": identity["fingerprint"],
        "plan_hash": folder_plan_hash(source), "err": config.err, "params": result.total_params,
        **source_fields(source, identity["fingerprint"]), "mode": config.mode, "finetuned": config.mode,
        "origin": "finetune",
        "ppl": result.heldout_ppl_after, "nll": result.after.get("heldout_nll"), "dataset": result.data,
        "data_hash": identity["data_hash"], "tokens": result.tokens, "token_budget": config.eval_tokens,
        "seqlen": config.seqlen, "seconds": result.train_seconds, "tokens_per_s": result.tokens_per_s},
        result.record())
