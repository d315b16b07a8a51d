"""What a compressed folder becomes outside this tool: a merged checkpoint of the original architecture (the
factors multiplied back, for tools with no low-rank layer: vLLM, llama.cpp's converter), and the model card
every folder carries (`README.md` with Hugging Face front matter).

A merged checkpoint is as large as the dense model: it saves nothing on disk or in memory. What it keeps is
the compression's effect on the weights (each merged layer has rank r), so it is the way to run a compressed
model's outputs in a tool that cannot hold A·B, or to start further work (quantisation, another compression)
from it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import WeLoreError
from ...models import LowRankLinear, ModelSource, count_parameters, load_model, set_module, stored_dtypes
from ...utils import atomic_folder
from ...utils.hf import read_config, transformers_ready
from .card import CARD, model_card
from .folder import _TOKENIZER_FILES, check_output



def merged_layer(layer: LowRankLinear, like: nn.Module) -> nn.Module:
    """A dense layer of `like`'s type (nn.Linear, or GPT-2's Conv1D with its (in, out) weight) holding A·B,
    multiplied in float64 and rounded once to the factors' dtype."""
    product = (layer.A.weight.detach().double() @ layer.B.weight.detach().double()).to(layer.A.weight.dtype)
    bias = layer.A.bias
    if isinstance(like, nn.Linear):
        dense = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device=product.device,
                          dtype=product.dtype)
        weight = product
    else:  # Conv1D(nf=out, nx=in), weight (in, out)
        dense = type(like)(layer.out_features, layer.in_features).to(product.device, product.dtype)
        weight = product.T
    with torch.no_grad():
        dense.weight.copy_(weight)
        if bias is not None:
            dense.bias.copy_(bias.detach())
    return dense


def merge_factors(model: nn.Module, config: Any) -> int:
    """Replace every LowRankLinear of `model` by the dense layer type its architecture has there (read from a
    meta-device build of `config`); the number merged."""
    transformers_ready()
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            set_module(model, name, merged_layer(module, skeleton.get_submodule(name)))
            merged += 1
    return merged


def export_merged(source: ModelSource, output: Path, protected: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Write `source` (a compressed folder) as a plain checkpoint of its original architecture to `output`, in the
    dtype its factors are stored in, with its tokenizer and a model card."""
    if source.kind != "compressed":
        raise WeLoreError(f"{source.path} is not a compressed folder: there are no factors to merge (it is already a "
                          "plain checkpoint)")
    check_output(output, protected or source.protected())
    if output.exists():
        raise WeLoreError(f"output {output} exists; a merged export is a plain checkpoint: choose a new path")
    dtype = stored_dtypes(source.safetensors_files())[1]
    model = load_model(source, dtype)
    config = read_config(source.path)
    before = count_parameters(model)
    merged = merge_factors(model, config)
    model.config = config
    model.config.dtype = dtype
    needed = sum(p.numel() * p.element_size() for p in model.parameters()) + 2**20
    with atomic_folder(output, needed=needed) as tmp:
        model.save_pretrained(tmp)
        for name in _TOKENIZER_FILES:
            if (source.path / name).is_file() and not (tmp / name).exists():
                shutil.copy2(source.path / name, tmp / name)
        (tmp / CARD).write_text(model_card(source.path, merged_into=output))
    return {"input": str(source.path), "output": str(output), "merged_layers": merged, "params_factored": before,
            "params_merged": count_parameters(model), "dtype": str(dtype).removeprefix("torch.")}
