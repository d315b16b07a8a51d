"""Writing compressed-model folders: a model with `LowRankLinear` layers saved with the rank map it applied and
a manifest, atomically, never over a user's folder or into the source model. The folder format and loading it
back without any SVD are `models.compressed` (`models.load_model` loads any source).
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

from ...errors import WeLoreError
from ...models import FORMAT, MANIFEST, count_parameters, read_manifest
from ...models.hfconfig import write_loadable
from .card import write_card
from ...utils import atomic_folder, atomic_write_text, read_json
from ...utils import check_output as check_path

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
    updated: dict[str, Any] = field(default_factory=dict)  # layer -> LayerUpdate (output error before, after)
    calibration: dict[str, Any] = field(default_factory=dict)  # the text the plan, ActSVD or update read (provenance)
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
        write_metadata(tmp, report, source_folder, base_model, folder)
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


def write_metadata(tmp: Path, report: CompressionReport, source_folder: Path | None, base_model: str,
                   final: Path | None = None) -> None:
    """Tokenizer files of the source, the rank map applied, the manifest, and (config.json present) what plain
    transformers loads it with and the model card, beside the weights in `tmp` (to become `final`)."""
    if source_folder is not None:
        for name in _TOKENIZER_FILES:
            if (source_folder / name).is_file() and not (tmp / name).exists():
                shutil.copy2(source_folder / name, tmp / name)
    rankmap = report.rankmap
    atomic_write_text(tmp / "rankmap.json", json.dumps(rankmap, indent=1) + "\n")
    base_path = str(source_folder.resolve()) if source_folder is not None else ""  # where a teacher is found again
    if source_folder is not None and is_compressed_folder(source_folder):  # fine-tuned: the dense model stays the base
        base = read_manifest(source_folder)
        base_model, base_path = base.get("base_model") or base_model, base.get("base_path", "")
    manifest = {"format": FORMAT, "base_model": base_model or rankmap.get("model", ""), "base_path": base_path,
                "base_fingerprint": rankmap.get("fingerprint", ""), "mode": report.mode, "act_svd": report.act_svd,
                "factored": report.factored, "truncated": report.truncated,
                "params_before": report.params_before, "params_after": report.params_after}
    if (tmp / "config.json").is_file():  # a standard Hugging Face folder: plain transformers loads it (remote code)
        try:
            manifest["modeling"] = write_loadable(tmp, report.factored)
        except WeLoreError:  # an architecture transformers does not know (remote code of its own): native load only
            pass
    if report.calibration:  # which text shaped the factors: a folder says what it was calibrated on
        manifest["calibration"] = report.calibration
    if report.updated:  # the closed-form update: each layer's relative output error on calibration, before and after
        manifest["updated"] = {name: _pair(u) for name, u in report.updated.items()}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if (tmp / "config.json").is_file():
        write_card(tmp, shown=final)


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


def read_report(folder: Path) -> CompressionReport:
    """The compression recorded in a compressed folder (manifest and rank map), to write another like it."""
    manifest = read_manifest(folder)
    rankmap: dict[str, Any] = read_json(folder / "rankmap.json", "rank map")
    return CompressionReport(manifest.get("mode", "lrc"), bool(manifest.get("act_svd", False)),
                             int(manifest.get("params_before", 0)), int(manifest.get("params_after", 0)),
                             dict(manifest["factored"]), dict(manifest.get("truncated", {})),
                             updated=dict(manifest.get("updated", {})),
                             calibration=dict(manifest.get("calibration", {})), rankmap=rankmap)


def _pair(update: Any) -> list[float]:  # a LayerUpdate, or the [before, after] a manifest already holds
    return [float(update.before), float(update.after)] if hasattr(update, "before") else [float(x) for x in update]
