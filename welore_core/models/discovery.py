"""Layer discovery on a checkpoint that is not loaded: from its config on the meta device, or from the
tensor names and shapes alone when there is no config."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace

from ..errors import WeLoreError
from .layers import LayerInfo, discover_layers, discovery_notes
from .loading import meta_model
from .source import ModelSource
from .tensors import TensorIndex

DISCOVERY_VERSION = 1  # bump when layer discovery changes, so cached layer lists are rebuilt
_BLOCK_TENSOR = re.compile(r"^(?P<prefix>.+?)\.(?P<block>\d+)\.(?P<rest>.+)\.weight$")


def discovery_key(source: ModelSource) -> str:
    """What the layer list depends on besides the weights: the config and the discovery code."""
    config = source.config_path.read_bytes() if source.config_path is not None else b"<names>"
    return f"v{DISCOVERY_VERSION}:" + hashlib.sha256(config).hexdigest()[:16]


def discover_from_names(shapes: dict[str, tuple[int, ...]], with_head: bool = False) -> list[LayerInfo]:
    """Layer discovery from checkpoint tensor names and shapes alone (no config to build the model from).

    The block list is the `<prefix>.<int>.` with the most 2-D weights; shapes are taken as stored
    (out, in) since a bare checkpoint does not say which layers are Conv1D.
    """
    groups: Counter[str] = Counter()
    for tname, shape in shapes.items():
        m = _BLOCK_TENSOR.match(tname)
        if m and len(shape) == 2:
            groups[m["prefix"]] += 1
    if not groups:
        raise WeLoreError("no 2-D '<blocks>.<index>.<layer>.weight' tensors found in the checkpoint")
    prefix = groups.most_common(1)[0][0]
    layers = []
    for tname, shape in shapes.items():
        m = _BLOCK_TENSOR.match(tname)
        if m and m["prefix"] == prefix and len(shape) == 2:
            name = tname[: -len(".weight")]
            layers.append(LayerInfo(name, int(m["block"]), m["rest"], (int(shape[0]), int(shape[1])), f"{name}.bias" in shapes))
    if with_head and "lm_head.weight" in shapes and len(shapes["lm_head.weight"]) == 2:
        s = shapes["lm_head.weight"]
        layers.append(LayerInfo("lm_head", -1, "lm_head", (int(s[0]), int(s[1])), "lm_head.bias" in shapes))
    return sorted(layers, key=lambda l: (l.block if l.block >= 0 else 1 << 30, _natural(l.kind)))


def _natural(text: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def source_layers(source: ModelSource, index: TensorIndex) -> tuple[list[LayerInfo], list[str]]:
    """Discover the layers of a checkpoint (head included, block -1) and map each to its stored tensor name.

    With a config.json the module tree is built on the meta device, so names and Conv1D orientation are
    exactly what `named_modules()` gives; without one, names and shapes of the tensors decide.
    """
    shapes = {name: shape for name, (_, shape, _) in index.items()}
    if source.config_path is None:
        return discover_from_names(shapes, with_head=True), []
    model = meta_model(source)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embed_name = next((n for n, m in model.named_modules() if embed is not None and m is embed), "")
    found: list[LayerInfo] = []
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
