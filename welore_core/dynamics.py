"""Gradient-dynamics lab: pretrain a small LLaMA from scratch and record how low-rank structure emerges.

The observation side of WeLore (arXiv 2407.11239 §2, Figures 2, 3 and 9): a LLaMA built from a preset
(`welore_core/configs/dynamics/*.json`, ~0.2M to ~130M parameters) is trained with AdamW (linear
warm-up, cosine decay) on a text corpus, and every `every` steps, on one fixed held-out probe batch, each
block linear layer's gradient and weight spectra and its gradient (or a sketch) are recorded
(`dynamics_record`). Analysis of the records is `dynamics_analysis`.

The run folder holds `run.json` (settings, layers, status), `records/step-*.npz`, `probe.npy`,
`losses.csv`, `checkpoint.pt` (the latest resumable state: model, optimiser, schedule, step, RNG and
data position), and once finished `model/` (a HF folder `welore spectra` reads) and `summary.csv`.
Rerunning on the same folder continues from the last checkpoint and ends in the same state, bit for
bit on the CPU, as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .devices import parse_device
from .dynamics_data import (
    LOCAL_TOKENIZERS,
    Tokens,
    load_text,
    sample_batch,
    split_probe,
    tokenize,
)
from .dynamics_record import record_checkpoint, record_steps, save_record
from .errors import WeLoreError
from .layers import LayerInfo, discover_layers
from .paths import cache_dir
from .registry import Registry, run_key
from .storage import atomic_write_bytes, atomic_write_text

Progress = Callable[[int, int, str], None]
RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
_TRAIN_FIELDS = ("steps", "every", "batch_size", "seqlen", "lr", "warmup")


def presets() -> list[str]:
    """Names of the shipped model presets."""
    folder = resources.files("welore_core") / "configs" / "dynamics"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(preset: str) -> dict[str, Any]:
    """A preset's {"description", "model": LlamaConfig fields, "train": default training settings}."""
    if preset in presets():
        text = (resources.files("welore_core") / "configs" / "dynamics" / f"{preset}.json").read_text()
        where = f"preset {preset!r}"
    else:
        path = Path(preset).expanduser()
        if not path.is_file():
            raise WeLoreError(f"config {preset!r}: not a preset ({', '.join(presets())}) and no such JSON file")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise WeLoreError(f"config {where}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeLoreError(f"config {where}: expected an object with a \"model\" object of LlamaConfig fields")
    unknown = set(data.get("train", {})) - set(_TRAIN_FIELDS)
    if unknown:
        raise WeLoreError(f"config {where}: unknown train settings {sorted(unknown)} (known: {list(_TRAIN_FIELDS)})")
    return data


@dataclass(frozen=True)
class DynamicsConfig:
    """A pretraining run and what it records. Training settings left None come from the preset."""

    preset: str = "small"  # a preset name (`presets()`) or a JSON file of the same form
    data: str = "tinyshakespeare"  # tinyshakespeare, wikitext2, c4, hub:<dataset>[:<config>] or a text file
    tokenizer: str = "byte"  # byte / char (built locally, no download) or a model folder / hub id
    steps: int | None = None  # optimiser steps in all
    every: int | None = None  # record (and checkpoint) every this many steps, plus step 0 and the last
    batch_size: int | None = None  # training windows per step
    seqlen: int | None = None  # tokens per window
    lr: float | None = None  # peak AdamW learning rate
    warmup: int | None = None  # linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at lr * this (GaLore's schedule)
    weight_decay: float = 0.0  # GaLore pretrains with none; decay would itself pull weights towards low rank
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    seed: int = 0  # model init, batch order and sketch hashes
    probe_batch: int = 8  # windows in the fixed probe batch the recorded gradients come from
    probe_fraction: float = 0.05  # held-out tail of the corpus the probe windows are drawn from
    sketch_dim: int = 4096  # count-sketch size: cosine standard error ≈ (1 − c²) / sqrt(sketch_dim)
    full_max: int = 65536  # store the whole gradient (float16 unit vector) up to this many entries
    device: str = "auto"  # auto = cuda when present; bit-exact resume is only promised on the CPU
    model: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields; filled from the preset

    def __post_init__(self) -> None:
        preset = load_preset(self.preset)
        for name in _TRAIN_FIELDS:
            if getattr(self, name) is None:
                if name not in preset.get("train", {}):
                    raise WeLoreError(f"config {self.preset!r}: no {name} given and the preset has no default")
                object.__setattr__(self, name, preset["train"][name])
        if not self.model:
            object.__setattr__(self, "model", dict(preset["model"]))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("steps", "every", "batch_size", "seqlen", "probe_batch", "sketch_dim", "full_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WeLoreError(f"dynamics {name} must be a positive integer, got {value!r}")
        if self.seqlen < 2:
            raise WeLoreError(f"dynamics seqlen must be at least 2, got {self.seqlen}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup):
            raise WeLoreError(f"dynamics warmup must be a non-negative integer, got {self.warmup!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise WeLoreError(f"dynamics lr must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise WeLoreError(f"dynamics min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise WeLoreError(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay}, {self.grad_clip}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise WeLoreError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 < self.probe_fraction < 0.5:
            raise WeLoreError(f"probe_fraction must be in (0, 0.5), got {self.probe_fraction}")
        limit = self.model.get("max_position_embeddings")
        if isinstance(limit, int) and self.seqlen > limit:
            raise WeLoreError(f"seqlen {self.seqlen} is longer than the preset's {limit} positions")
        parse_device(self.device, "dynamics device")

    def record_at(self) -> list[int]:
        """The steps recorded: 0, every, 2·every, …, and the last step."""
        return sorted({0, *range(self.every, self.steps + 1, self.every), self.steps})

    def identity(self) -> dict[str, Any]:
        """What decides the run's result (the device does not change what is recorded, up to rounding)."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out.pop("device")
        return out


def default_folder(config: DynamicsConfig) -> Path:
    """`cache/dynamics/<preset>-<hash of the settings>`: the same settings resume the same run."""
    blob = json.dumps(config.identity(), sort_keys=True, default=str)
    name = Path(config.preset).stem if config.preset.endswith(".json") else config.preset
    return cache_dir() / "dynamics" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_model(config: DynamicsConfig, vocab_size: int) -> torch.nn.Module:
    """A freshly initialised LlamaForCausalLM (seeded) for the preset and the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        llama = LlamaConfig(**{**config.model, "vocab_size": vocab_size})
    except (TypeError, ValueError) as err:
        raise WeLoreError(f"config {config.preset!r}: bad model settings ({err})") from None
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(llama)


def _lr_factor(config: DynamicsConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:  # step = optimiser steps taken so far
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


@dataclass
class _Trainer:
    """Model, optimiser and schedule of one run, with their resumable state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator  # draws the training windows: its state is the data position
    step: int = 0
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train loss, lr)

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "batch_rng": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(), "losses": self.losses}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.losses = int(state["step"]), [tuple(x) for x in state["losses"]]  # type: ignore[misc]


def _trainer(config: DynamicsConfig, vocab_size: int, device: torch.device) -> _Trainer:
    model = build_model(config, vocab_size).to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # norms are not decayed
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=config.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    return _Trainer(model, optimizer, scheduler, torch.Generator().manual_seed(config.seed + 1))


def _open_folder(folder: Path, config: DynamicsConfig, tokens: Tokens) -> dict[str, Any] | None:
    """The existing run in `folder` (checked to be this run), or None for a new one."""
    meta_path = folder / RUN_FILE
    if not meta_path.is_file():
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise WeLoreError(f"output {folder}: exists and holds no dynamics run ({RUN_FILE}); choose an empty folder")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeLoreError(f"{meta_path}: unreadable run file ({err})") from None
    old, new = meta.get("config", {}), json.loads(json.dumps(config.identity()))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise WeLoreError(f"output {folder}: holds a run with other settings ({detail}); use another folder")
    if meta.get("data_digest") != tokens.digest:
        raise WeLoreError(f"output {folder}: its run trained on other text than {tokens.corpus!r} (digest differs)")
    return meta


def _write_meta(folder: Path, config: DynamicsConfig, tokens: Tokens, layers: list[LayerInfo], params: int,
                status: str, step: int, seconds: float, note: str = "") -> None:
    meta = {"kind": "welore.dynamics/v1", "config": config.identity(), "device": config.device,
            "tokenizer": tokens.tokenizer, "vocab_size": tokens.vocab_size, "data": tokens.corpus,
            "data_digest": tokens.digest, "tokens": int(tokens.ids.size), "params": params,
            "layers": [{"name": l.name, "block": l.block, "kind": l.kind, "shape": list(l.shape), "bias": l.bias}
                       for l in layers],
            "status": status, "step": step, "recorded": record_steps(folder), "seconds": round(seconds, 3),
            "note": note, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(folder / RUN_FILE, json.dumps(meta, indent=1))


def _save_checkpoint(folder: Path, trainer: _Trainer) -> None:
    buffer = io.BytesIO()
    torch.save(trainer.state(), buffer)
    atomic_write_bytes(folder / CHECKPOINT, buffer.getvalue())
    lines = ["step,loss,lr"] + [f"{s},{l:.6f},{r:.6g}" for s, l, r in trainer.losses]
    atomic_write_text(folder / "losses.csv", "\n".join(lines) + "\n")


def run_dynamics(config: DynamicsConfig, folder: str | Path, progress: Progress | None = None,
                 registry: Registry | None = None) -> dict[str, Any]:
    """Train and record (resuming whatever `folder` already holds); returns the run's result dict.

    `progress(step, steps, message)` is called after every step; an exception it raises (a job's
    JobCancelled, a KeyboardInterrupt) stops the run, which then resumes from its last checkpoint.
    """
    from .dynamics_analysis import EmergenceConfig, emergence_summary, load_run

    folder = Path(folder).expanduser()
    tokens = tokenize(load_text(config.data), config.tokenizer)
    if config.tokenizer in LOCAL_TOKENIZERS and tokens.vocab_size < 2:
        raise WeLoreError(f"data {config.data!r}: a vocabulary of {tokens.vocab_size} symbol(s) cannot be trained on")
    train_np, probe = split_probe(tokens.ids, config.seqlen, config.probe_batch, config.probe_fraction)
    meta = _open_folder(folder, config, tokens)
    device = parse_device(config.device, "dynamics device")
    trainer = _trainer(config, tokens.vocab_size, device)
    layers = discover_layers(trainer.model)
    params = sum(p.numel() for p in trainer.model.parameters())
    train = torch.from_numpy(train_np)
    probe_dev = probe.to(device)
    record_at = set(config.record_at())
    start_time = time.perf_counter()
    resumed_from: int | None = None
    if meta is not None and (folder / CHECKPOINT).is_file():
        try:
            state = torch.load(folder / CHECKPOINT, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise WeLoreError(f"{folder / CHECKPOINT}: unreadable checkpoint ({type(err).__name__}: {err})") from None
        trainer.load(state)
        resumed_from = trainer.step
    else:
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, probe.numpy())
        atomic_write_bytes(folder / "probe.npy", buffer.getvalue())
        save_record(folder, 0, _record(trainer, layers, probe_dev, config))
        _save_checkpoint(folder, trainer)
    prior = float(meta.get("seconds", 0.0)) if meta else 0.0
    saved = trainer.step  # the step the checkpoint on disk holds
    _write_meta(folder, config, tokens, layers, params, "running", trainer.step, prior)
    if progress:
        first = f"resumed at step {trainer.step}" if resumed_from is not None else "step 0 recorded"
        progress(trainer.step, config.steps, first)
    try:
        while trainer.step < config.steps:
            loss = _train_step(trainer, train, config, device)
            if trainer.step in record_at:
                save_record(folder, trainer.step, _record(trainer, layers, probe_dev, config))
                _save_checkpoint(folder, trainer)
                saved = trainer.step
                _write_meta(folder, config, tokens, layers, params, "running", trainer.step,
                            prior + time.perf_counter() - start_time)
            if progress:
                progress(trainer.step, config.steps, f"step {trainer.step} loss {loss:.3f}")
    except BaseException as err:  # cancelled or failed: say so in run.json, keep the last checkpoint
        _write_meta(folder, config, tokens, layers, params, "interrupted", saved,
                    prior + time.perf_counter() - start_time, f"{type(err).__name__}: {err}"[:500])
        raise
    seconds = prior + time.perf_counter() - start_time
    _save_model(trainer.model, folder / "model")
    _write_meta(folder, config, tokens, layers, params, "done", trainer.step, seconds)
    run = load_run(folder)
    summary = emergence_summary(run, EmergenceConfig())
    atomic_write_text(folder / "summary.csv", summary.to_csv(index=False))
    probe_loss = float(run.scalars("probe_loss")[-1])
    train_loss = float(np.mean([l for _, l, _ in trainer.losses[-max(1, config.every):]]))
    result = {"folder": str(folder), "preset": config.preset, "params": params, "layers": len(layers),
              "steps": config.steps, "every": config.every, "recorded": run.steps.tolist(),
              "resumed_from": resumed_from, "train_loss": train_loss, "probe_loss": probe_loss,
              "seconds": round(seconds, 3), "tokens_trained": config.steps * config.batch_size * config.seqlen,
              "artefacts": {"run": str(folder / RUN_FILE), "records": [str(p) for p in run.paths],
                            "probe": str(folder / "probe.npy"), "losses": str(folder / "losses.csv"),
                            "checkpoint": str(folder / CHECKPOINT), "model": str(folder / "model"),
                            "summary": str(folder / "summary.csv")}}
    _register(registry or Registry.default(), config, tokens, folder, result)
    return result


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    """The trained model as a HF folder (config.json + safetensors), without transformers' progress bar."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)  # type: ignore[operator]
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _train_step(trainer: _Trainer, train: torch.Tensor, config: DynamicsConfig, device: torch.device) -> float:
    batch = sample_batch(train, config.batch_size, config.seqlen, trainer.gen).to(device)  # (B, T)
    loss = trainer.model(input_ids=batch, labels=batch).loss
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), config.grad_clip)
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.step += 1
    value = float(loss.detach())
    if not math.isfinite(value):
        raise WeLoreError(f"training diverged at step {trainer.step} (loss {value}); lower --lr (now {config.lr})")
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

