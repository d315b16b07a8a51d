"""WeLore low-rank models for plain transformers: `AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)` on a folder written by WeLore Studio. Needs only torch and transformers.

The folder's config.json has model_type "welore_<base>" (so that, without trust_remote_code, transformers refuses
the folder instead of building the dense model with random factors) and maps AutoConfig and
AutoModelForCausalLM to classes of this file, each named "WeLore" + the transformers class it extends:
`WeLoreLlamaConfig`, `WeLoreLlamaForCausalLM`, `WeLoreGPT2LMHeadModel`, ... They are made on first use. The
config is the base config with the factored layers' ranks in `welore["factored"]`; the model is the base model
with those layers built as low-rank modules of their final shapes (y = A(B x) + b, B: rank x in, A: out x rank)
while transformers builds it on the meta device, before any weight is read. The dense weights of the factored
layers are never made. This file is written by WeLore Studio; the folder's manifest records its sha256.
"""
from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

__all__ = ["LowRankLinear"]
_MADE: dict[str, type] = {}


class LowRankLinear(nn.Module):
    """A rank-`rank` factorisation W = A B of a linear layer; behaves like `nn.Linear(in_features, out_features)`."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.B = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.A = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self.A.weight @ self.B.weight

    @property
    def bias(self) -> Any:
        return self.A.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self.B(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def _low_rank(model: nn.Module, factored: dict[str, int]) -> None:
    """Swap each named layer (nn.Linear, or GPT-2's Conv1D whose weight is (in, out)) for a LowRankLinear of the
    same shape, dtype and device."""
    for name, rank in factored.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        if isinstance(module, LowRankLinear):
            continue
        weight = module.weight
        out_f, in_f = weight.shape if isinstance(module, nn.Linear) else (weight.shape[1], weight.shape[0])
        setattr(parent, child, LowRankLinear(in_f, out_f, int(rank), bias=getattr(module, "bias", None) is not None,
                                             device=weight.device, dtype=weight.dtype))


def _config_class(base_name: str) -> type:
    base = getattr(transformers, base_name)
    return type("WeLore" + base_name, (base,), {"model_type": "welore_" + base.model_type, "__module__": __name__})


def _model_class(base_name: str) -> type:
    base = getattr(transformers, base_name)
    config_class = __getattr__("WeLore" + base.config_class.__name__)

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        _low_rank(self, dict((getattr(config, "welore", None) or {}).get("factored", {})))

    return type("WeLore" + base_name, (base,), {"config_class": config_class, "__init__": __init__,
                                                "__module__": __name__})


def __getattr__(name: str) -> type:
    """`WeLore<transformers class>`, made once."""
    if name not in _MADE:
        base_name = name[len("WeLore"):] if name.startswith("WeLore") else ""
        if not base_name or not hasattr(transformers, base_name):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        _MADE[name] = _config_class(base_name) if base_name.endswith("Config") else _model_class(base_name)
    return _MADE[name]
