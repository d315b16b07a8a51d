"""Layer discovery: every 2-D weight of a linear layer inside the repeated decoder blocks.

Not hard-wired to LLaMA names: the decoder blocks are the `nn.ModuleList` of identical modules holding
the most parameters (`model.layers`, `transformer.h`, `gpt_neox.layers`, ...), and a layer is any
`nn.Linear` or GPT-2 style `Conv1D` (weight stored transposed, (in, out)) inside one block. Embeddings
and `lm_head` live outside the blocks and are therefore excluded unless asked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import WeLoreError


@dataclass(frozen=True)
class LayerInfo:
    """One analysable weight matrix."""

    name: str  # dotted module name as named_modules() gives it: "model.layers.3.self_attn.q_proj"
    block: int  # index in the decoder-block list; -1 for a layer outside the blocks (lm_head)
    kind: str  # name relative to its block ("self_attn.q_proj"): the column of Figure 4/6 heatmaps
    shape: tuple[int, int]  # (out, in), whatever the storage layout
    bias: bool  # the module has a bias (kept as is by factorisation)
    transposed: bool = False  # stored as (in, out): GPT-2 Conv1D
    tensor: str = ""  # weight's name in the state dict / checkpoint (defaults to name + ".weight")

    def __post_init__(self) -> None:
        if not self.tensor:
            object.__setattr__(self, "tensor", f"{self.name}.weight")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise WeLoreError(f"layer {self.name}: shape must be 2-D and non-empty, got {self.shape}")

    @property
    def full_rank(self) -> int:
        return min(self.shape)

    @property
    def dense_params(self) -> int:
        return self.shape[0] * self.shape[1] + (self.shape[0] if self.bias else 0)

    def factored_params(self, rank: int) -> int:
        """Parameters of B (rank x in) followed by A (out x rank), bias kept."""
        return rank * (self.shape[0] + self.shape[1]) + (self.shape[0] if self.bias else 0)


def is_factored(module: nn.Module) -> bool:
    """A factored linear layer: linear children A (out x r) and B (r x in) and an int `rank`."""
    return (isinstance(getattr(module, "A", None), nn.Linear) and isinstance(getattr(module, "B", None), nn.Linear)
            and isinstance(getattr(module, "rank", None), int))


def linear_weight(module: nn.Module) -> tuple[torch.Tensor, bool] | None:
    """The module's weight and whether it is stored transposed, or None when it is not a linear layer.

    A factored layer counts as one layer whose weight is the product A·B.
    """
    if is_factored(module):
        return module.A.weight @ module.B.weight, False  # type: ignore[operator]
    if isinstance(module, nn.Linear):
        return module.weight, False
    # transformers.pytorch_utils.Conv1D (GPT-2 family): y = x @ W + b with W of shape (in, out)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None:
        return module.weight, True
    return None


def dense_weight(module: nn.Module, layer: str) -> torch.Tensor:
    """The weight of linear layer `layer` as (out, in), whatever its module stores (Conv1D is transposed)."""
    found = linear_weight(module)
    if found is None:
        raise WeLoreError(f"layer {layer}: {type(module).__name__} is not a linear layer")
    weight, transposed = found
    return weight.detach().T if transposed else weight.detach()  # (out, in)


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The repeated decoder blocks: the ModuleList of same-class children with the most parameters."""
    best: tuple[str, nn.ModuleList, int] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(c) for c in mod}) == 1:
            count = sum(p.numel() for p in mod.parameters())
            if best is None or count > best[2]:
                best = (name, mod, count)
    if best is None or best[2] == 0:
        raise WeLoreError(f"{type(model).__name__}: found no list of repeated decoder blocks to analyse")
    return best[0], best[1]


def discover_layers(model: nn.Module, with_head: bool = False) -> list[LayerInfo]:
    """All linear layers inside the decoder blocks, in module order (optionally plus the output head)."""
    prefix, blocks = find_blocks(model)
    layers: list[LayerInfo] = []
    for index, block in enumerate(blocks):
        factored: list[str] = []
        for rel, mod in block.named_modules():
            if any(rel.startswith(f + ".") for f in factored):
                continue  # the A and B halves of a factored layer are not layers of their own
            found = linear_weight(mod)
            if not rel or found is None:
                continue
            if is_factored(mod):
                factored.append(rel)
            weight, transposed = found
            if weight.dim() != 2:
                continue
            shape = (weight.shape[1], weight.shape[0]) if transposed else (weight.shape[0], weight.shape[1])
            bias = getattr(mod, "bias", None) is not None
            layers.append(LayerInfo(f"{prefix}.{index}.{rel}", index, rel, (int(shape[0]), int(shape[1])), bias, transposed))
    if with_head:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        for name, mod in model.named_modules():
            if head is not None and mod is head and linear_weight(mod) is not None:
                w = mod.weight
                layers.append(LayerInfo(name, -1, name, (int(w.shape[0]), int(w.shape[1])), mod.bias is not None))
    if not layers:
        raise WeLoreError(f"{type(model).__name__}: the blocks under '{prefix}' contain no linear layers")
    return layers


def discovery_notes(model: nn.Module, layers: list[LayerInfo]) -> list[str]:
    """Warnings about block weights discovery leaves out: fused >2-D tensors such as MoE experts."""
    prefix, blocks = find_blocks(model)
    skipped = [(f"{prefix}.{i}.{n}", p.numel()) for i, b in enumerate(blocks) for n, p in b.named_parameters() if p.dim() > 2]
    if not skipped:
        return []
    total = sum(p.numel() for p in blocks.parameters())
    share = 100.0 * sum(n for _, n in skipped) / total
    return [f"{len(skipped)} block weight(s) with more than 2 dims (e.g. {skipped[0][0]}, fused MoE experts) hold "
            f"{share:.0f} % of the block parameters and are not analysed"]


def select_layers(layers: list[LayerInfo], include: str | None = None, exclude: str | None = None) -> list[LayerInfo]:
    """Keep layers whose dotted name matches `include` and not `exclude` (regular expressions, `re.search`)."""
    try:
        inc = re.compile(include) if include else None
        exc = re.compile(exclude) if exclude else None
    except re.error as err:
        raise WeLoreError(f"bad layer pattern {include or exclude!r}: {err}") from None
    kept = [l for l in layers if (inc is None or inc.search(l.name)) and not (exc and exc.search(l.name))]
    if not kept:
        raise WeLoreError(f"no layer matches include={include!r} exclude={exclude!r} (of {len(layers)} layers)")
    return kept


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted `name` in `model` (peft-style: the parent's attribute is replaced)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters, each tied (shared) one once."""
    return list({id(p): p for p in model.parameters()}.values())


def first_non_finite(model: nn.Module) -> str | None:
    """Name of the first parameter holding NaN or inf (in module order), or None when all are finite."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all()):
            return name
    return None


def count_parameters(model: nn.Module) -> int:
    """Parameters of a model, tied ones counted once."""
    return sum(p.numel() for p in unique_parameters(model))
