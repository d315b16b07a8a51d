"""Compressed-model folders: save a model with `LowRankLinear` layers and load it back without any SVD.

A folder holds the transformers config, safetensors weights (a factored layer's tensors are
`<layer>.B.weight`, `<layer>.A.weight` and `<layer>.A.bias`), the tokenizer, the rank map it was made
from (`rankmap.json`) and `welore-manifest.json` (format, mode, which layers are factored at which
rank, parameter counts). Loading builds the architecture with empty weights, swaps in low-rank
modules of the recorded ranks and assigns the saved tensors, so logits are bit-identical.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .compress import CompressionReport, count_parameters
from .errors import WeLoreError
from .layers import linear_weight
from .lowrank import LowRankLinear
from .storage import atomic_folder, atomic_write_text

MANIFEST = "welore-manifest.json"
FORMAT = "welore.compressed/v1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json")


def is_compressed_folder(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def save_compressed(model: nn.Module, folder: Path, rankmap: dict[str, Any], report: CompressionReport,
                    source_folder: Path | None = None, base_model: str = "") -> Path:
    """Write a compressed model folder atomically (a temp folder renamed into place).

    The target must not exist, or be a compressed folder (replaced); anything else is refused so that
    `-o` can never wipe a user's folder or the source model.
    """
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and is_compressed_folder(folder)):
        raise WeLoreError(f"output {folder} exists and is not a compressed model folder; choose a new path")
    if source_folder is not None and folder.resolve() == Path(source_folder).resolve():
        raise WeLoreError(f"output {folder} is the source model's folder; choose a new path")
    with atomic_folder(folder) as tmp:
        save_file(_unique_tensors(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if source_folder is not None:
            for name in _TOKENIZER_FILES:
                if (source_folder / name).is_file() and not (tmp / name).exists():
                    shutil.copy2(source_folder / name, tmp / name)
        atomic_write_text(tmp / "rankmap.json", json.dumps(rankmap, indent=1) + "\n")
        manifest = {"format": FORMAT, "base_model": base_model or rankmap.get("model", ""),
                    "base_fingerprint": rankmap.get("fingerprint", ""), "mode": report.mode, "act_svd": report.act_svd,
                    "factored": report.factored, "truncated": report.truncated,
                    "params_before": report.params_before, "params_after": count_parameters(model)}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return folder


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
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise WeLoreError(f"{folder / MANIFEST}: unreadable manifest ({err})") from None
    if manifest.get("format") != FORMAT:
        raise WeLoreError(f"{folder / MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def load_compressed(folder: Path, dtype: str = "float32", device: str = "cpu") -> nn.Module:
    """Rebuild a compressed model from its folder: architecture, low-rank modules, saved tensors."""
    from accelerate import init_empty_weights
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not isinstance(manifest.get("factored"), dict):
        raise WeLoreError(f"{folder / MANIFEST}: 'factored' must map layer names to ranks")
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary tables) real
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
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
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeLoreError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    try:
        for file in files:
            state.update(load_file(str(file)))
        state = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in state.items()}
        result = model.load_state_dict(state, strict=False, assign=True)
    except (OSError, RuntimeError, SafetensorError) as err:  # damaged file, or ranks that do not match the tensors
        raise WeLoreError(f"{folder}: weights do not load ({str(err).splitlines()[0]})") from None
    if result.unexpected_keys:
        raise WeLoreError(f"{folder}: tensors not in the model: {', '.join(result.unexpected_keys[:5])}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise WeLoreError(f"{folder}: weights missing from the checkpoint: {', '.join(still_meta[:5])}")
    return model.to(device).eval()
