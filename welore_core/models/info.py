"""What a model is before any SVD: source kind, architecture, blocks, parameter count, fingerprint.

Read from config.json and the safetensors headers only (no weights loaded), so the dashboard's model
page can show it instantly; `expect_kind` turns a mismatch between what the user chose ("a .gguf") and
what the path is into a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WeLoreError
from ..utils import read_json
from .source import ModelSource, resolve_model
from .tensors import index_params, tensor_index

SOURCE_KINDS = {  # what a user can pick -> the ModelSource kinds that satisfy it
    "embedded": ("embedded",),
    "folder": ("folder", "compressed"),
    "gguf": ("gguf",),
    "safetensors": ("safetensors",),
    "hub": ("hub",),
}
_CONFIG_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "torch_dtype")


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # what the user typed ("" = embedded)
    kind: str  # ModelSource kind: embedded | folder | compressed | gguf | safetensors | hub
    label: str
    path: str  # folder holding config and weights
    architecture: str  # config.architectures[0], or "unknown" without a config
    blocks: int | None  # num_hidden_layers (or n_layer) from the config
    params: int  # tensors in the weight files (a tied head counted once)
    weight_files: int
    weight_bytes: int
    streamable: bool  # spectra can be read tensor by tensor without building the model
    config: dict[str, Any] = field(default_factory=dict)  # the interesting config fields

    def rows(self) -> list[tuple[str, str]]:
        """(field, value) pairs for a two-column table."""
        base = [("source", self.kind), ("path", self.path), ("architecture", self.architecture),
                ("blocks", str(self.blocks)), ("parameters", f"{self.params:,}"),
                ("weight files", f"{self.weight_files} ({self.weight_bytes / 2**20:.0f} MiB)"),
                ("streamed spectra", "yes" if self.streamable else "no (model is built in memory)")]
        return base + [(k, str(v)) for k, v in self.config.items()]


def describe_model(spec: str | Path | None = None) -> ModelInfo:
    """Resolve a model spec and summarise it from its config and safetensors headers."""
    source = resolve_model(spec)
    config = _read_config(source)
    # compressed and .bin-only folders have no streamed weight files: count the safetensors on disk
    files = source.safetensors_files()
    params = index_params(tensor_index(files))
    architectures = config.get("architectures") or ["unknown"]
    blocks = config.get("num_hidden_layers", config.get("n_layer"))
    return ModelInfo(spec="" if spec is None else str(spec), kind=source.kind, label=source.label,
                     path=str(source.path), architecture=str(architectures[0]),
                     blocks=int(blocks) if blocks is not None else None, params=params, weight_files=len(files),
                     weight_bytes=sum(f.stat().st_size for f in files), streamable=source.streamable,
                     config={k: config[k] for k in _CONFIG_FIELDS if k in config})


def expect_kind(info: ModelInfo, wanted: str) -> None:
    """Refuse a model whose resolved kind is not what the user picked (e.g. a folder given as 'gguf')."""
    if wanted not in SOURCE_KINDS:
        raise WeLoreError(f"source kind {wanted!r}: expected one of {', '.join(SOURCE_KINDS)}")
    if info.kind not in SOURCE_KINDS[wanted]:
        raise WeLoreError(f"model {info.spec or '(embedded)'!r} is a {info.kind} source, not a {wanted} one; "
                          f"pick '{_kind_for(info.kind)}' or change the path")


def guess_kind(spec: str) -> str:
    """The picker's preselection for a spec (no file access beyond a stat)."""
    text = spec.strip()
    if not text:
        return "embedded"
    if text.endswith(".gguf"):
        return "gguf"
    if text.endswith((".safetensors", ".safetensors.index.json")):
        return "safetensors"
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return "folder"
    return "hub"


def _kind_for(kind: str) -> str:
    return next(k for k, kinds in SOURCE_KINDS.items() if kind in kinds)


def _read_config(source: ModelSource) -> dict[str, Any]:
    if source.config_path is None:
        return {}
    config: dict[str, Any] = read_json(source.config_path, "config")
    return config
