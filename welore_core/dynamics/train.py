"""Gradient-dynamics lab: pretrain a small LLaMA from scratch and record how low-rank structure emerges.

The observation side of WeLore (arXiv 2407.11239 §2, Figures 2, 3 and 9): a LLaMA built from a preset
(`config`, ~0.2M to ~130M parameters) is trained with AdamW (linear warm-up, cosine decay) on a text
corpus, and every `every` steps, on one fixed held-out probe batch, each block linear layer's gradient and
weight spectra and its gradient (or a sketch) are recorded (`record`) into the run folder (`folder`).
Analysis of the records is `analysis`.

Training batches are random windows drawn by (seed, step), so a resumed run needs no data position.
Rerunning on the same folder continues from the last checkpoint and ends in the same state, bit for
bit on the CPU, as an uninterrupted run.
"""
from __future__ import annotations

import io
import json
import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import LOCAL_TOKENIZERS, Tokens, load_corpus, sample_windows, split_probe, tokenize
from ..errors import WeLoreError
from ..evaluation import Registry, run_key
from ..models import LayerInfo, discover_layers
from ..utils import Progress, atomic_folder, atomic_write_bytes, atomic_write_text, lr_factor, parse_device
from .config import DynamicsConfig, build_model
from .folder import KIND, RunFolder
from .record import record_checkpoint


@dataclass
class _Trainer:
    """Model, optimiser and schedule of one run, with their resumable state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train loss, lr)

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "losses": self.losses}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.losses = int(state["step"]), [tuple(x) for x in state["losses"]]  # type: ignore[misc]


def _trainer(config: DynamicsConfig, vocab_size: int, device: torch.device) -> _Trainer:
    model = build_model(config, vocab_size, device).to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # norms are not decayed
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=config.betas)
    def factor(step: int) -> float:  # step = optimiser steps taken so far
        return lr_factor(step, config.steps, config.warmup, config.min_lr_ratio, "cosine")

    return _Trainer(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor))


def _open_folder(run: RunFolder, config: DynamicsConfig, tokens: Tokens) -> dict[str, Any] | None:
    """The existing run in the folder (checked to be this run), or None for a new one."""
    if not run.is_run():
        if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            raise WeLoreError(f"output {run.path}: exists and holds no dynamics run ({run.run_file.name}); "
                              "choose an empty folder")
        return None
    meta = run.meta()
    old, new = meta.get("config", {}), json.loads(json.dumps(config.identity()))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise WeLoreError(f"output {run.path}: holds a run with other settings ({detail}); use another folder")
    if meta.get("data_digest") != tokens.digest:
        raise WeLoreError(f"output {run.path}: its run trained on other text than {tokens.corpus!r} (digest differs)")
    return meta


def _write_meta(run: RunFolder, config: DynamicsConfig, tokens: Tokens, layers: list[LayerInfo], params: int,
                status: str, step: int, seconds: float, note: str = "") -> None:
    meta = {"kind": KIND, "config": config.identity(), "device": config.device,
            "tokenizer": tokens.tokenizer, "vocab_size": tokens.vocab_size, "data": tokens.corpus,
            "data_digest": tokens.digest, "tokens": int(tokens.ids.size), "params": params,
            "layers": [{"name": l.name, "block": l.block, "kind": l.kind, "shape": list(l.shape), "bias": l.bias}
                       for l in layers],
            "status": status, "step": step, "recorded": run.record_steps(), "seconds": round(seconds, 3),
            "note": note, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(run.run_file, json.dumps(meta, indent=1))


def _save_checkpoint(run: RunFolder, trainer: _Trainer) -> None:
    buffer = io.BytesIO()
    torch.save(trainer.state(), buffer)
    atomic_write_bytes(run.checkpoint, buffer.getvalue())
    lines = ["step,loss,lr"] + [f"{s},{l:.6f},{r:.6g}" for s, l, r in trainer.losses]
    atomic_write_text(run.losses, "\n".join(lines) + "\n")


def run_dynamics(config: DynamicsConfig, folder: str | Path, progress: Progress | None = None,
                 registry: Registry | None = None) -> dict[str, Any]:
    """Train and record (resuming whatever `folder` already holds); returns the run's result dict.

    `progress(step, steps, message)` is called after every step; an exception it raises (a job's
    JobCancelled, a KeyboardInterrupt) stops the run, which then resumes from its last checkpoint.
    """
    from .analysis import EmergenceConfig, emergence_summary, load_run

    run = RunFolder.of(folder)
    tokens = tokenize(load_corpus(config.data), config.tokenizer)
    if config.tokenizer in LOCAL_TOKENIZERS and tokens.vocab_size < 2:
        raise WeLoreError(f"data {config.data!r}: a vocabulary of {tokens.vocab_size} symbol(s) cannot be trained on")
    train, probe = split_probe(tokens.ids, config.seqlen, config.probe_batch, config.probe_fraction)
    meta = _open_folder(run, config, tokens)
    device = parse_device(config.device, "dynamics device")
    trainer = _trainer(config, tokens.vocab_size, device)
    layers = discover_layers(trainer.model)
    params = sum(p.numel() for p in trainer.model.parameters())
    probe_dev = probe.to(device)
    record_at = set(config.record_at())
    start_time = time.perf_counter()
    resumed_from: int | None = None
    if meta is not None and run.checkpoint.is_file():
        try:
            state = torch.load(run.checkpoint, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise WeLoreError(f"{run.checkpoint}: unreadable checkpoint ({type(err).__name__}: {err})") from None
        trainer.load(state)
        resumed_from = trainer.step
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_probe(probe.numpy())
        run.save_record(0, _record(trainer, layers, probe_dev, config))
        _save_checkpoint(run, trainer)
    prior = float(meta.get("seconds", 0.0)) if meta else 0.0
    saved = trainer.step  # the step the checkpoint on disk holds
    _write_meta(run, config, tokens, layers, params, "running", trainer.step, prior)
    if progress:
        first = f"resumed at step {trainer.step}" if resumed_from is not None else "step 0 recorded"
        progress(trainer.step, config.steps, first)
    try:
        while trainer.step < config.steps:
            loss = _train_step(trainer, train, config, device)
            if trainer.step in record_at:
                run.save_record(trainer.step, _record(trainer, layers, probe_dev, config))
                _save_checkpoint(run, trainer)
                saved = trainer.step
                _write_meta(run, config, tokens, layers, params, "running", trainer.step,
                            prior + time.perf_counter() - start_time)
            if progress:
                progress(trainer.step, config.steps, f"step {trainer.step} loss {loss:.3f}")
    except BaseException as err:  # cancelled or failed: say so in run.json, keep the last checkpoint
        _write_meta(run, config, tokens, layers, params, "interrupted", saved,
                    prior + time.perf_counter() - start_time, f"{type(err).__name__}: {err}"[:500])
        raise
    seconds = prior + time.perf_counter() - start_time
    _save_model(trainer.model, run.model)
    _write_meta(run, config, tokens, layers, params, "done", trainer.step, seconds)
    stored = load_run(run.path)
    summary = emergence_summary(stored, EmergenceConfig())
    atomic_write_text(run.summary, summary.to_csv(index=False))
    probe_loss = float(stored.scalars("probe_loss")[-1])
    train_loss = float(np.mean([l for _, l, _ in trainer.losses[-max(1, config.every):]]))
    result = {"folder": str(run.path), "preset": config.preset, "params": params, "layers": len(layers),
              "steps": config.steps, "every": config.every, "recorded": stored.steps.tolist(),
              "resumed_from": resumed_from, "train_loss": train_loss, "probe_loss": probe_loss,
              "seconds": round(seconds, 3), "tokens_trained": config.steps * config.batch_size * config.seqlen,
              "artefacts": {"run": str(run.run_file), "records": [str(p) for p in stored.paths],
                            "probe": str(run.probe), "losses": str(run.losses), "checkpoint": str(run.checkpoint),
                            "model": str(run.model), "summary": str(run.summary)}}
    _register(registry or Registry.default(), config, tokens, run.path, result)
    return result


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    """The trained model as a HF folder (config.json + safetensors), without transformers' progress bar."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with atomic_folder(folder, create=False) as tmp:
            model.save_pretrained(tmp)  # type: ignore[operator]
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _train_step(trainer: _Trainer, train: np.ndarray, config: DynamicsConfig, device: torch.device) -> float:
    batch = sample_windows(train, config.seqlen, config.batch_size, [config.seed, trainer.step]).to(device)  # (B, T)
    loss = trainer.model(input_ids=batch, labels=batch).loss
    value = float(loss.detach())
    if not math.isfinite(value):  # before the update: the model and the last checkpoint stay good
        raise WeLoreError(f"training diverged at step {trainer.step + 1} (loss {value}); the last checkpoint "
                          f"is kept; lower --lr (now {config.lr})")
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), config.grad_clip)
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.step += 1
    trainer.losses.append((trainer.step, value, float(lr)))
    return value


def _record(trainer: _Trainer, layers: list[LayerInfo], probe: torch.Tensor,
            config: DynamicsConfig) -> dict[str, np.ndarray]:
    arrays = record_checkpoint(trainer.model, layers, probe, config.sketch_dim, config.full_max, config.seed)
    window = [l for s, l, _ in trainer.losses if s > trainer.step - config.every]
    arrays["train_loss"] = np.asarray(np.mean(window) if window else np.nan)
    return arrays


def _register(registry: Registry, config: DynamicsConfig, tokens: Tokens, folder: Path, result: dict[str, Any]) -> None:
    """One registry row per finished run (folder in `model`, probe loss as nll); details in the result JSON."""
    key = run_key(kind="dynamics", folder=str(folder.resolve()), config=config.identity(), data_hash=tokens.digest)
    seconds = float(result["seconds"])
    registry.record(key, {"kind": "dynamics", "model": str(folder.resolve()), "params": result["params"],
                          "nll": result["probe_loss"],
                          "ppl": math.exp(min(result["probe_loss"], 700.0)), "dataset": tokens.corpus,
                          "data_hash": tokens.digest, "tokens": result["tokens_trained"], "seqlen": config.seqlen,
                          "seconds": seconds, "tokens_per_s": result["tokens_trained"] / seconds if seconds else None},
                    {**result, "config": config.identity()})
