"""Instantiating a model: any source (`load_model`: a compressed folder with its low-rank layers, anything else
as transformers' causal LM), a plain checkpoint's causal LM, its module tree on the meta device, and its
tokenizer."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import WeLoreError
from ..utils import transformers_ready
from .build import building
from .compressed import load_compressed
from ..utils.hf import read_config, tokenizer_config
from .placement import check_fits
from .source import ModelSource
from .tensors import index_params, tensor_index


def load_pretrained(source: ModelSource, dtype: Any = "float32", device: Any = "cpu") -> Any:
    """The causal LM of a plain (not compressed) source, every weight from the checkpoint, in `dtype` (a torch
    dtype or its name) on `device`; off the CPU the weights go straight to the device, with no host copy."""
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)

    if source.config_path is None:
        raise WeLoreError(f"{source.path}: no config.json, so the model cannot be instantiated (spectra still stream)")
    if source.kind == "compressed":
        raise WeLoreError(f"{source.path} is a compressed model folder: load it with welore_core.load_model")
    try:
        with building():
            model, info = AutoModelForCausalLM.from_pretrained(
                source.path, dtype=dtype, output_loading_info=True,
                **({} if device.type == "cpu" else {"device_map": {"": device}}))
    except Exception as err:
        raise WeLoreError(f"{source.path}: not a causal LM transformers can load ({type(err).__name__}: {err})") from None
    missing = sorted(info.get("missing_keys", []))
    if missing:  # transformers would silently initialise them at random
        raise WeLoreError(f"{source.path}: {len(missing)} weight(s) of {type(model).__name__} missing from the "
                          f"checkpoint (e.g. {', '.join(missing[:3])}); is this a causal LM folder?")
    return model.to(device).eval()


def meta_model(source: ModelSource) -> Any:
    """The model's module tree on the meta device: names and types with no memory for weights."""
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoModelForCausalLM

    assert source.config_path is not None
    try:
        config = read_config(source.config_path.parent)  # a compressed folder's: its base architecture's
        with building(), torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception as err:
        raise WeLoreError(f"{source.config_path}: not a causal LM config ({type(err).__name__}: {err})") from None


def load_tokenizer(source: ModelSource) -> Any:
    """The source's tokenizer (from its folder), or a one-line error saying why there is none."""
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.path, **tokenizer_config(source.path))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WeLoreError(f"{source.path}: no usable tokenizer ({type(err).__name__}: {first})") from None


def max_positions(model: Any) -> int | None:
    """The longest sequence the model's position embeddings cover, when its config says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_source_seqlen(source: ModelSource, seqlen: int, what: str = "seqlen") -> None:
    """check_seqlen from the source's config.json alone, before the model is loaded."""
    if source.config_path is None:
        return
    from types import SimpleNamespace

    from ..utils import read_json

    check_seqlen(SimpleNamespace(config=SimpleNamespace(**read_json(source.config_path, "config"))), seqlen, what)


def check_seqlen(model: Any, seqlen: int, what: str = "seqlen") -> None:
    """Refuse windows longer than the model's positions (before any work is done with them)."""
    limit = max_positions(model)
    if limit is not None and seqlen > limit:
        raise WeLoreError(f"{what} {seqlen} is longer than the model's {limit} positions")


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
