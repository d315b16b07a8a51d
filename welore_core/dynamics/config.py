"""A gradient-dynamics run's settings: a model preset (`presets/*.json`, LlamaConfig fields and default
training settings, from ~0.2M to ~130M parameters) or a JSON file of the same form, and the training and
recording settings, validated field by field."""
from __future__ import annotations

import difflib
import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import WeLoreError
from ..models import building, check_fits
from ..utils import cache_dir, parse_device, read_json, transformers_ready

_TRAIN_FIELDS = ("steps", "every", "batch_size", "seqlen", "lr", "warmup")
_TOP_FIELDS = ("description", "model", "train")
# training holds, per parameter, the float32 weight, its gradient and AdamW's two moments
TRAINING_COPIES = 4


def presets() -> list[str]:
    """Names of the shipped model presets."""
    folder = resources.files("welore_core.dynamics") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(preset: str) -> dict[str, Any]:
    """A preset's {"description", "model": LlamaConfig fields, "train": default training settings}."""
    if preset in presets():
        text = (resources.files("welore_core.dynamics") / "presets" / f"{preset}.json").read_text()
        where = f"preset {preset!r}"
        data = json.loads(text)  # shipped with the package: valid
    else:
        path = Path(preset).expanduser()
        if not path.is_file():
            raise WeLoreError(f"config {preset!r}: not a preset ({', '.join(presets())}) and no such JSON file")
        where = str(path)
        data = read_json(path, "dynamics config", kind=None)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeLoreError(f"config {where}: expected an object with a \"model\" object of LlamaConfig fields")
    unknown = set(data.get("train", {})) - set(_TRAIN_FIELDS)
    if unknown:
        raise WeLoreError(f"config {where}: unknown train settings {sorted(unknown)} (known: {list(_TRAIN_FIELDS)})")
    _refuse_unknown(set(data) - set(_TOP_FIELDS), list(_TOP_FIELDS), f"config {where}: unknown key")
    return data


def _refuse_unknown(names: set[str], known: list[str], what: str) -> None:
    """A misspelt key is a setting silently lost (`hiden_size` would train the default width): refuse it, naming
    the closest known one."""
    for name in sorted(names):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
        raise WeLoreError(f"{what} {name!r}{hint}")


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
        check_model(self.model, self.preset)
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


_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")  # required, positive
_OPTIONAL_SIZES = ("num_key_value_heads", "max_position_embeddings", "head_dim")


def check_model(model: dict[str, Any], preset: str) -> None:
    """The LlamaConfig fields of a preset or config file, checked one by one (transformers would fail later
    with a message that names no field, or not at all)."""
    where = f"config {preset!r}: model"
    transformers = transformers_ready()
    known = [n for n in inspect.signature(transformers.LlamaConfig.__init__).parameters if n not in ("self", "kwargs")]
    _refuse_unknown(set(model) - set(known), known, f"{where}: unknown LlamaConfig field")
    for name in _SIZES + _OPTIONAL_SIZES:
        if name not in model:
            if name in _SIZES:
                raise WeLoreError(f"{where}.{name} is missing (a positive integer)")
            continue
        value = model[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WeLoreError(f"{where}.{name} must be a positive integer, got {value!r}")
    hidden, heads = model["hidden_size"], model["num_attention_heads"]
    if "head_dim" not in model and hidden % heads:
        raise WeLoreError(f"{where}.hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    kv = model.get("num_key_value_heads", heads)
    if heads % kv:
        raise WeLoreError(f"{where}.num_attention_heads {heads} is not divisible by num_key_value_heads {kv}")
    if model.get("head_dim", hidden // heads) % 2:
        raise WeLoreError(f"{where}: the head dimension {model.get('head_dim', hidden // heads)} must be even "
                          "(rotary embeddings rotate pairs)")
    eps = model.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise WeLoreError(f"{where}.rms_norm_eps must be a small positive number, got {eps!r}")


def default_folder(config: DynamicsConfig) -> Path:
    """`cache/dynamics/<preset>-<hash of the settings>`: the same settings resume the same run."""
    blob = json.dumps(config.identity(), sort_keys=True, default=str)
    name = Path(config.preset).stem if config.preset.endswith(".json") else config.preset
    return cache_dir() / "dynamics" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_model(config: DynamicsConfig, vocab_size: int, device: torch.device | None = None) -> torch.nn.Module:
    """A freshly initialised LlamaForCausalLM (seeded) for the preset and the tokenizer's vocabulary. With a
    `device`, a model whose training state would not fit it is refused first (counted on the meta device)."""
    transformers_ready()  # the first import, one thread at a time
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        llama = LlamaConfig(**{**config.model, "vocab_size": vocab_size})
    except (TypeError, ValueError) as err:
        raise WeLoreError(f"config {config.preset!r}: bad model settings ({err})") from None
    if device is not None:
        with building(), torch.device("meta"):  # allocates nothing (a mode local to this thread)
            params = sum(p.numel() for p in LlamaForCausalLM(llama).parameters())
        check_fits(f"config {config.preset!r}", params, device, torch.float32, copies=TRAINING_COPIES,
                   held="weights, gradients and two AdamW moments", advice="choose a smaller model")
    torch.manual_seed(config.seed)
    with building():
        return LlamaForCausalLM(llama)
