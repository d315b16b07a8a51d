"""Compressed-model folders: save a model with `LowRankLinear` layers and load it back without any SVD
(`load_model` loads any source: a compressed folder this way, a plain checkpoint with transformers).

A folder holds the transformers config, safetensors weights (a factored layer's tensors are
`<layer>.B.weight`, `<layer>.A.weight` and `<layer>.A.bias`), the tokenizer, the rank map it was made
from (`rankmap.json`) and `welore-manifest.json` (format, mode, which layers are factored at which
rank, parameter counts). Loading builds the architecture with empty weights, swaps in low-rank
modules of the recorded ranks and assigns the saved tensors, so logits are bit-identical.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import WeLoreError
from ..models import (MANIFEST, ModelSource, building, check_fits, count_parameters, empty_weights, index_params,
                      linear_weight, load_pretrained, set_module, tensor_index)
from ..utils import atomic_folder, atomic_write_text, read_json, transformers_ready
from ..utils import check_output as check_path
from .lowrank import LowRankLinear

FORMAT = "welore.compressed/v1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json")


@dataclass
class CompressionReport:
    """What `compress_to` did to a model; with the rank map it applied, what a compressed folder records."""

    mode: str
    act_svd: bool
    params_before: int
    params_after: int
    factored: dict[str, int] = field(default_factory=dict)  # layer -> rank, replaced by LowRankLinear
    truncated: dict[str, int] = field(default_factory=dict)  # layer -> rank, kept dense at rank r
    seconds: float = 0.0
    rankmap: dict[str, Any] = field(default_factory=dict, repr=False)  # the plan applied, as a rank map

    def bytes(self, dtype_bytes: int) -> tuple[int, int]:
        return self.params_before * dtype_bytes, self.params_after * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        """What was done (the rank map itself is written beside the weights, not repeated here)."""
        out = asdict(self)
        out.pop("rankmap")
        return out


def is_compressed_folder(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def save_compressed(model: nn.Module, folder: Path, report: CompressionReport, source_folder: Path | None = None,
                    base_model: str = "", stored: tuple[dict[str, torch.dtype], torch.dtype] | None = None,
                    protected: tuple[Path, ...] | None = None) -> Path:
    """Write a compressed model folder atomically (a temp folder renamed into place): the weights, config,
    tokenizer files of `source_folder`, the rank map `report` applied, and the manifest.

    The target must not exist, or be a compressed folder (replaced); anything else is refused so that
    `-o` can never wipe a user's folder. Nor may it be at or inside `protected` (`ModelSource.protected()`;
    default: `source_folder`).
    """
    folder = Path(folder)
    check_output(folder, protected if protected is not None else source_folder)
    tensors = _unique_tensors(model)
    if stored is not None:  # each tensor in the dtype the input stored it in (a factor: its layer's), bf16 in bf16 out
        tensors = {k: v.to(_stored_dtype(k, *stored)) if v.is_floating_point() else v for k, v in tensors.items()}
    needed = sum(t.numel() * t.element_size() for t in tensors.values()) + 2**20  # + config, tokenizer, JSON
    with atomic_folder(folder, needed=needed) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        computed = getattr(model.config, "dtype", None)
        if stored is not None:  # config.json names the dtype the weights are stored in, not the one computed in
            model.config.dtype = stored[1]
        try:
            model.config.save_pretrained(tmp)
        finally:
            model.config.dtype = computed
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        report.params_after = count_parameters(model)
        write_metadata(tmp, report, source_folder, base_model)
    return folder


def _stored_dtype(name: str, dtypes: dict[str, torch.dtype], default: torch.dtype) -> torch.dtype:
    """The input's dtype for a tensor of the compressed model: its own, or for a factor its layer's."""
    for half in (".A.weight", ".B.weight"):
        if name.endswith(half):
            return dtypes.get(name.removesuffix(half) + ".weight", default)
    if name.endswith(".A.bias"):
        return dtypes.get(name.removesuffix(".A.bias") + ".bias", default)
    return dtypes.get(name, default)


def check_output(folder: Path, source: Path | tuple[Path, ...] | None) -> None:
    """`-o` may be new or a compressed folder (replaced); never a user's folder, nor the source model or a path
    inside it (`source`: its folder, or `ModelSource.protected()`), nor a place nothing can be created in."""
    if folder.exists() and not (folder.is_dir() and is_compressed_folder(folder)):
        raise WeLoreError(f"output {folder} exists and is not a compressed model folder; choose a new path")
    protected = () if source is None else (source,) if isinstance(source, Path) else source
    check_path(folder, folder=True, protected=protected)


def write_metadata(tmp: Path, report: CompressionReport, source_folder: Path | None, base_model: str) -> None:
    """Tokenizer files of the source, the rank map applied and the manifest, beside the weights in `tmp`."""
    if source_folder is not None:
        for name in _TOKENIZER_FILES:
            if (source_folder / name).is_file() and not (tmp / name).exists():
                shutil.copy2(source_folder / name, tmp / name)
    rankmap = report.rankmap
    atomic_write_text(tmp / "rankmap.json", json.dumps(rankmap, indent=1) + "\n")
    manifest = {"format": FORMAT, "base_model": base_model or rankmap.get("model", ""),
                "base_fingerprint": rankmap.get("fingerprint", ""), "mode": report.mode, "act_svd": report.act_svd,
                "factored": report.factored, "truncated": report.truncated,
                "params_before": report.params_before, "params_after": report.params_after}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the module names (no checkpoint renaming), each shared tensor once: the first
    name wins, which keeps the input embedding of a tied model (the head is re-tied on load)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().contiguous().cpu()
    return state


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = read_json(folder / MANIFEST, "manifest")
    if manifest.get("format") != FORMAT:
        raise WeLoreError(f"{folder / MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def read_report(folder: Path) -> CompressionReport:
    """The compression recorded in a compressed folder (manifest and rank map), to write another like it."""
    manifest = read_manifest(folder)
    rankmap: dict[str, Any] = read_json(folder / "rankmap.json", "rank map")
    return CompressionReport(manifest.get("mode", "lrc"), bool(manifest.get("act_svd", False)),
                             int(manifest.get("params_before", 0)), int(manifest.get("params_after", 0)),
                             dict(manifest["factored"]), dict(manifest.get("truncated", {})), rankmap=rankmap)


def load_compressed(folder: Path, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a compressed model from its folder: architecture, low-rank modules, saved tensors (read straight
    onto `device` and cast to `dtype` there)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)
    manifest = read_manifest(folder)
    if not isinstance(manifest.get("factored"), dict):
        raise WeLoreError(f"{folder / MANIFEST}: 'factored' must map layer names to ranks")
    config = AutoConfig.from_pretrained(folder)
    with building(), empty_weights():  # parameters on meta, buffers (rotary tables) real
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for name, rank in manifest["factored"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise WeLoreError(f"{folder}: manifest layer {name} is not a module of {type(model).__name__}") from None
        found = linear_weight(module)
        if found is None:
            raise WeLoreError(f"{folder}: manifest layer {name} is not a linear layer")
        w, transposed = found
        out_f, in_f = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
        new = LowRankLinear(in_f, out_f, int(rank), bias=getattr(module, "bias", None) is not None,
                            device="meta", dtype=w.dtype)
        set_module(model, name, new)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeLoreError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    try:
        for file in files:
            for key, value in load_file(str(file), device="cpu" if device.type == "cpu" else str(device)).items():
                state[key] = value.to(dtype) if value.is_floating_point() else value
        result = model.load_state_dict(state, strict=False, assign=True)
    except (OSError, RuntimeError, SafetensorError) as err:  # damaged file, or ranks that do not match the tensors
        raise WeLoreError(f"{folder}: weights do not load ({str(err).splitlines()[0]})") from None
    if result.unexpected_keys:
        raise WeLoreError(f"{folder}: tensors not in the model: {', '.join(result.unexpected_keys[:5])}")
    if getattr(model.config, "tie_word_embeddings", False):
        with building():
            model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise WeLoreError(f"{folder}: weights missing from the checkpoint: {', '.join(still_meta[:5])}")
    return model.to(device).eval()


def load_model(source: ModelSource, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu") -> nn.Module:
    """Instantiate any source for evaluation, compression or training: a compressed folder with its low-rank
    layers, anything else as transformers' causal LM; refused up front when its weights in `dtype` do not fit
    the device's free memory."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)
    files = source.safetensors_files()
    if files:
        check_fits(source.label, index_params(tensor_index(files)), device, dtype)
    if source.kind == "compressed":
        return load_compressed(source.path, dtype, device)
    model: nn.Module = load_pretrained(source, dtype, device)
    return model
