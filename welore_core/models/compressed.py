"""Reading compressed-model folders: the manifest, and the model rebuilt without any SVD.

A folder holds the transformers config, safetensors weights (a factored layer's tensors are
`<layer>.B.weight`, `<layer>.A.weight` and `<layer>.A.bias`), the tokenizer, the rank map it was made
from (`rankmap.json`) and `welore-manifest.json` (format, mode, which layers are factored at which
rank, parameter counts). Loading builds the architecture with empty weights, swaps in low-rank
modules of the recorded ranks and assigns the saved tensors, so logits are bit-identical. Writing them is
`compression.apply.folder`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeLoreError
from ..utils import read_json, transformers_ready
from .build import building, empty_weights
from ..utils.hf import read_config
from .hfconfig import check_modeling
from .layers import linear_weight, set_module
from .lowrank import LowRankLinear
from .source import MANIFEST

FORMAT = "welore.compressed/v1"


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = read_json(folder / MANIFEST, "manifest")
    if manifest.get("format") != FORMAT:
        raise WeLoreError(f"{folder / MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def load_compressed(folder: Path, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a compressed model from its folder: architecture, low-rank modules, saved tensors (read straight
    onto `device` and cast to `dtype` there)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)
    manifest = read_manifest(folder)
    if not isinstance(manifest.get("factored"), dict):
        raise WeLoreError(f"{folder / MANIFEST}: 'factored' must map layer names to ranks")
    config = read_config(folder)  # a loadable folder's base architecture
    check_modeling(folder, manifest.get("modeling"))
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
