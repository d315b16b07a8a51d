"""The training loop of a fine-tuning run: an `accelerate.Accelerator` loop over one prepared model.

Under `accelerate launch` the same code runs once per process (DDP): each process trains on its share of
the global batch, gradients and the reported loss are averaged across processes (so, for text windows of
equal length, N processes follow one process with N times the batch; for downstream tasks whose answers
differ in length the per-process means weigh tokens slightly differently), and only the main process
writes checkpoints. With `config.fsdp` the model is sharded instead of replicated (`sharded`): the same loop,
the same batches and averaging, each process holding its shards. Memory is measured over the loop only: CUDA
max allocated on GPU; on CPU the process's peak RSS (VmHWM), reset before the first step through
/proc/self/clear_refs where the kernel allows it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import WeLoreError
from ..utils import Progress
from .config import FinetuneConfig
from .distill import distill_loss
from .folders import (Layout, finish_checkpoint, latest_checkpoint, load_adapter, load_schedule, load_training,
                      save_checkpoint)
from .modes import Prepared, build_optimizer, build_scheduler, prepare_model, state_bytes
from .sharded import clip_grad_norm, fresh, gathered, load_shards, save_shards, shard_model, skeleton


class Batches(Protocol):
    def batch(self, config: FinetuneConfig, index: int, process: int = 0, processes: int = 1) -> dict[str, torch.Tensor]: ...


@dataclass
class LoopStats:
    """What one session of the loop measured (a resumed run measures only its own steps)."""

    tokens: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None
    peak_memory_kind: str = ""
    peak_rss_mib: float | None = None
    state_bytes: dict[str, int] = field(default_factory=dict)


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            line = next(row for row in fh if row.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


class Session:
    """A model prepared for one mode, its optimizer and schedule, wrapped by accelerate; resumable."""

    def __init__(self, accelerator: Any, config: FinetuneConfig, model: nn.Module, layout: Layout, root: Path,
                 state: dict[str, Any], resume: Path | None = None, teacher: nn.Module | None = None) -> None:
        self.accelerator, self.config, self.layout, self.root, self.state = accelerator, config, layout, root, state
        self.teacher = teacher  # distillation: the frozen teacher, run beside the student in every step
        self.prepared: Prepared = prepare_model(model, config)
        self.sharded, self.frame = config.fsdp, None
        if self.sharded:  # fully_shard moves each process's shards to its device; the whole model never goes there
            self.frame = skeleton(self.prepared.model) if accelerator.is_main_process else None
            shard_model(self.prepared.model, config, accelerator.device)
            trainable = {n: p for n, p in self.prepared.model.named_parameters() if p.requires_grad}
            self.prepared.trainable, self.prepared.param_groups = trainable, [{"params": list(trainable.values())}]
        else:
            self.prepared.model.to(accelerator.device)  # before the optimizer: its state follows the parameters
        optimizer = build_optimizer(self.prepared, config)
        self.scheduler = build_scheduler(optimizer, config)
        if self.sharded:
            self.model, self.optimizer = self.prepared.model, optimizer  # not prepare(): that would wrap it in DDP
            if resume is not None:
                load_shards(resume, self.model, self.optimizer, accelerator.process_index)
                load_schedule(resume, self.scheduler)
            return
        if resume is not None:
            if config.mode == "lora":
                adapter = load_adapter(resume)
                with torch.no_grad():
                    for name, p in self.prepared.trainable.items():
                        p.copy_(adapter[name])
            load_training(resume, optimizer, self.scheduler)
        # the scheduler stays outside prepare(): accelerate would step it once per process
        self.model, self.optimizer = accelerator.prepare(self.prepared.model, optimizer)

    def checkpoint(self, step: int) -> None:
        if self.sharded:
            return self._checkpoint_shards(step)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            adapter = None
            if self.config.mode == "lora":
                adapter = dict(self.prepared.trainable)
                model = copy.deepcopy(model).merge_and_unload()  # the checkpoint's model/ folder, merged
            save_checkpoint(self.root, step, model, self.layout, self.optimizer, self.scheduler,
                            {**self.state, "step": step}, adapter)
        self.accelerator.wait_for_everyone()

    def _checkpoint_shards(self, step: int) -> None:
        """Every process writes its shards into a temporary step folder; the main process then completes it and
        moves it into place (`folders.finish_checkpoint`)."""
        acc = self.accelerator
        building = self.root / f".step-{step:06d}"
        if acc.is_main_process:
            fresh(building)
        acc.wait_for_everyone()
        save_shards(building, self.model, self.optimizer, acc.process_index)
        acc.wait_for_everyone()
        if acc.is_main_process:
            finish_checkpoint(self.root, building, step, self.scheduler, {**self.state, "step": step})
        acc.wait_for_everyone()

    def _no_sync(self, last: bool) -> Any:
        """Gradients are synchronised once per optimizer step: on its last micro-batch."""
        if not self.sharded:
            return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
        self.model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def _step(self, data: Batches, step: int) -> tuple[float, int]:
        """One optimizer step over grad_accum micro-batches: (loss averaged over processes, tokens seen)."""
        acc, config = self.accelerator, self.config
        loss_sum, tokens = 0.0, 0
        for micro in range(config.grad_accum):
            batch = {k: v.to(acc.device) for k, v in
                     data.batch(config, step * config.grad_accum + micro, acc.process_index, acc.num_processes).items()}
            last = micro == config.grad_accum - 1
            with self._no_sync(last):
                if self.teacher is not None:
                    loss = distill_loss(self.model, self.teacher, batch, config.temperature, config.alpha)
                else:
                    loss = self.model(**batch, use_cache=False).loss
                loss = loss / config.grad_accum
                acc.backward(loss)
            loss_sum += float(loss.detach())
            mask = batch.get("attention_mask")
            tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        mean_loss = float(acc.reduce(torch.tensor(loss_sum, device=acc.device), "mean"))  # the same on every process
        # the total gradient norm (clipped to max_grad_norm when set): inf or NaN gradients under a finite loss
        # (a half-precision overflow) must not reach the weights either
        trainable, limit = list(self.prepared.trainable.values()), config.max_grad_norm or math.inf
        norm = clip_grad_norm(trainable, limit) if self.sharded else float(acc.clip_grad_norm_(trainable, limit))
        overflow_handled = getattr(acc, "scaler", None) is not None  # fp16: the grad scaler skips such a step itself
        if not (math.isfinite(mean_loss) and (math.isfinite(norm) or overflow_handled)):  # stop before the update
            self.optimizer.zero_grad(set_to_none=True)
            what = f"loss became {mean_loss}" if not math.isfinite(mean_loss) else f"gradient norm became {norm}"
            latest = latest_checkpoint(self.root)
            then = (f"the last good checkpoint is {latest[0]}; a lower learning rate (now {config.lr:g}) is another "
                    f"run: write it to another output, or delete {self.root}" if latest else
                    f"no checkpoint was written yet, so nothing is kept; try a lower learning rate (now {config.lr:g})")
            raise WeLoreError(f"{config.mode}: the training {what} at step {step + 1}, so training stopped before "
                              f"that update ({then})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, int(acc.reduce(torch.tensor(tokens, device=acc.device), "sum"))

    def train(self, data: Batches, say: Progress) -> LoopStats:
        """Steps from state["step"] to config.steps; `say` after each (an exception there checkpoints first)."""
        acc, config, state = self.accelerator, self.config, self.state
        cuda = acc.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(acc.device)
        scope = "training loop" if reset_peak_rss() else "process"
        peaks: list[float | None] = []  # peak memory of each stretch between checkpoints
        stats = LoopStats()
        start, steps = int(state["step"]), config.steps
        self.model.train()
        for step in range(start, steps):
            began = time.perf_counter()
            loss, tokens = self._step(data, step)
            if cuda:
                torch.cuda.synchronize(acc.device)
            stats.step_seconds.append(time.perf_counter() - began)
            stats.seconds += stats.step_seconds[-1]
            stats.tokens += tokens
            state["loss_curve"].append([step + 1, loss])
            state["step"], state["tokens"] = step + 1, state["tokens"] + tokens
            state["train_seconds"] += stats.step_seconds[-1]
            saved = bool(config.save_every) and (step + 1) % config.save_every == 0 and step + 1 < steps
            if saved:  # writing a checkpoint (lora: a merged copy) is not training memory: keep it out of the peak
                peaks.append(self._peak(cuda))
                self.checkpoint(step + 1)
                self._reset_peak(cuda)
            try:
                say(step + 1, steps, f"{config.mode}: step {step + 1}/{steps}, loss {loss:.4f}")
            except BaseException:  # cancelled between steps: the state is consistent, keep it
                if not saved:
                    self.checkpoint(step + 1)
                raise
        # read before the final checkpoint: writing one (and lora's merged copy) is not training memory
        if stats.tokens:
            peaks.append(self._peak(cuda))
            known = [p for p in peaks if p is not None]
            stats.peak_memory_mib = max(known) if known else None
            stats.peak_rss_mib = stats.peak_memory_mib if not cuda else peak_rss_mib()
        stats.peak_memory_kind = "cuda max allocated" if cuda else f"peak RSS ({scope})"
        stats.state_bytes = state_bytes(self.prepared, self.optimizer)
        if start < steps:
            self.checkpoint(steps)  # an evaluation or a write that fails after this resumes without retraining
        return stats

    def _peak(self, cuda: bool) -> float | None:
        """Peak memory (MiB) since the last reset: CUDA max allocated, or the process's peak RSS."""
        if cuda:
            return torch.cuda.max_memory_allocated(self.accelerator.device) / 2**20
        return peak_rss_mib()

    def _reset_peak(self, cuda: bool) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.accelerator.device)
        else:
            reset_peak_rss()

    def final_model(self) -> nn.Module | None:
        """The trained model, unwrapped (LoRA merged into its weights), in eval mode. Sharded: gathered whole on the
        main process's CPU (every process must call this), None on the others."""
        if self.sharded:
            assert self.frame is not None or not self.accelerator.is_main_process
            whole = gathered(self.model, self.frame, self.accelerator.is_main_process)  # type: ignore[arg-type]
            if whole is None:
                return None
            return (whole.merge_and_unload() if self.config.mode == "lora" else whole).eval()  # type: ignore[operator]
        model = self.accelerator.unwrap_model(self.model)
        if self.config.mode == "lora":
            model = model.merge_and_unload()
        return model.eval()
