"""A training-free update after truncation (after SVD-LLM's sequential update, arXiv 2403.07378 §3.2).

Each factored layer was truncated against the statistics of the dense model's inputs. Once the layers before
it are compressed, the inputs it really receives have moved, and the dense layer's outputs it should give are
those of the dense model. Layer after layer, in the model's order, the left factor A is re-solved by least
squares so that A·B, fed what the model compressed and updated so far feeds it (X), gives what the dense layer
gives in the dense model (W X̂, X̂ the dense model's inputs of that layer on the same windows):

    A = argmin ‖W X̂ − A B X‖_F = W (X̂ Xᵀ) Bᵀ (B (X Xᵀ) Bᵀ)⁻¹,

B stays as it was. So each update also absorbs the error the compressed layers before it left in its inputs.
Only second moments are kept (X Xᵀ, X̂ Xᵀ, X̂ X̂ᵀ), so a layer costs three (in × in) sums and an r × r solve.
The model is run block by block on the calibration windows: the hidden states entering a block are kept for
the compressed model and for the dense one (a copy of the block, taken before it is compressed), and one pass
per group of layers fed the same input (q, k and v; o; gate and up; down) collects that input's moments.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ...errors import WeLoreError
from ...models import LowRankLinear, dense_weight

UPDATE_TARGET = "dense-outputs"  # what A is solved against (part of a compression's identity)
UPDATE_RIDGE = 1e-6  # relative to B G Bᵀ's mean diagonal: a numerical guard only, not a regulariser


@dataclass(frozen=True)
class LayerUpdate:
    """A layer's relative output error ‖W X̂ − A B X‖² / ‖W X̂‖² on the calibration windows (X: its inputs in the
    compressed model, X̂: in the dense one), with the truncation's A (`before`) and the re-solved one (`after`)."""

    before: float
    after: float


@dataclass
class Moments:
    """Second moments over calibration tokens of a layer's input in the compressed model (X) and in the dense one
    (X̂, the same tokens): G = X Xᵀ, C = X̂ Xᵀ, D = X̂ X̂ᵀ, each (in, in), float64."""

    g: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, dense: torch.Tensor | None = None) -> "Moments":
        """From inputs (tokens, in) of the compressed model and of the dense one (None: the same)."""
        x = x.to(torch.float64)
        g = x.T @ x
        if dense is None:
            return cls(g, g, g)
        xd = dense.to(torch.float64)
        return cls(g, xd.T @ x, xd.T @ xd)

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.g + other.g, self.c + other.c, self.d + other.d)


def solve_left(weight: torch.Tensor, b: torch.Tensor, m: Moments, ridge: float = UPDATE_RIDGE) -> torch.Tensor:
    """A (out, r) minimising ‖W X̂ − A B X‖_F, for W (out, in) and B (r, in); in float64."""
    w, bb = weight.detach().to(torch.float64), b.detach().to(torch.float64)
    lhs = bb @ m.g @ bb.T  # B G Bᵀ (r, r)
    lhs = lhs + ridge * lhs.diagonal().mean().clamp_min(1e-300) * torch.eye(lhs.shape[0], dtype=lhs.dtype,
                                                                             device=lhs.device)
    rhs = w @ m.c @ bb.T  # W C Bᵀ (out, r)
    return torch.linalg.solve(lhs, rhs.T).T  # A (B G Bᵀ) = W C Bᵀ; B G Bᵀ is symmetric


def output_error(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, m: Moments) -> float:
    """‖W X̂ − A B X‖_F² / ‖W X̂‖_F² from the moments."""
    w = weight.detach().to(torch.float64)
    ab = a.detach().to(torch.float64) @ b.detach().to(torch.float64)
    total = float(torch.einsum("oi,ij,oj->", w, m.d, w))
    err = total - 2 * float(torch.einsum("oi,ij,oj->", w, m.c, ab)) + float(torch.einsum("oi,ij,oj->", ab, m.g, ab))
    return max(err, 0.0) / total if total > 0 else 0.0


class _Stop(Exception):
    """Ends a forward pass once what it was run for has been seen."""


def _hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _with_hidden(call: tuple[tuple[Any, ...], dict[str, Any]], hidden: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = call
    return ((hidden, *args[1:]), kwargs) if args else ((), {**kwargs, "hidden_states": hidden})


class BlockInputs:
    """The calibration windows at the input of the current decoder block: the compressed model's hidden states
    (with the other arguments the model passes every block: mask, positions, rotary embeddings, captured at block
    0) and the dense model's (None while no block before has changed: then they are the same)."""

    def __init__(self, model: nn.Module, first: nn.Module, batches: list[torch.Tensor]) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.dense: list[torch.Tensor] | None = None
        self.block = 0  # the index of the block these are the inputs of

        def catch(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.calls.append((args, kwargs))
            raise _Stop

        device = next(model.parameters()).device
        handle = first.register_forward_pre_hook(catch, with_kwargs=True)
        model.eval()
        try:
            with torch.no_grad():
                for batch in batches:
                    try:
                        model(input_ids=batch.to(device), use_cache=False)
                    except _Stop:
                        pass
        finally:
            handle.remove()
        if len(self.calls) != len(batches):
            raise WeLoreError(f"{type(model).__name__}: its first decoder block was not reached by the calibration "
                              "forward pass")

    def dense_call(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Window i as the dense model's block receives it."""
        return self.calls[i] if self.dense is None else _with_hidden(self.calls[i], self.dense[i])

    def advance(self, block: nn.Module, dense_block: nn.Module) -> None:
        """The inputs of the next block: the outputs of `block` as it now is, and of `dense_block` (the same block
        before it changed; the same module when it did not) on the dense inputs."""
        same = self.dense is None and block is dense_block
        with torch.no_grad():
            outs = [_hidden(block(*args, **kwargs)) for args, kwargs in self.calls]
            dense = None if same else [_hidden(dense_block(*a, **k)) for a, k in map(self.dense_call,
                                                                                     range(len(self.calls)))]
        self.calls = [_with_hidden(call, out) for call, out in zip(self.calls, outs)]
        self.dense = dense
        self.block += 1


def _run_until(block: nn.Module, call: tuple[tuple[Any, ...], dict[str, Any]], modules: dict[str, nn.Module]
               ) -> tuple[list[str], torch.Tensor | None]:
    """Run `block` on one window until the first of `modules` to run has been fed, and those fed the very same
    input tensor after it (q, k and v after one norm): their names and that input."""
    group: list[str] = []
    seen: list[torch.Tensor] = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if not seen:
                seen.append(x)
            elif x is not seen[0]:
                raise _Stop  # the group is complete: the rest of this pass is not needed
            group.append(name)
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            block(*call[0], **call[1])
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return group, seen[0] if seen else None


def _first_group(inputs: BlockInputs, block: nn.Module, dense_block: nn.Module, prefix: str,
                 modules: dict[str, nn.Module]) -> tuple[list[str], Moments]:
    """The first group of `modules` (by name) that `block` runs, and the moments of its input over every window:
    from `block` on the compressed inputs and from `dense_block` on the dense ones."""
    group: list[str] = []
    total: Moments | None = None
    for i, call in enumerate(inputs.calls):
        names, x = _run_until(block, call, modules)
        if x is None:
            raise WeLoreError(f"none of {', '.join(modules)} ran in its block's forward pass")
        group = group or names
        xd = None
        if inputs.dense is not None or dense_block is not block:
            rel = group[0][len(prefix) + 1:]
            _, xd = _run_until(dense_block, inputs.dense_call(i), {group[0]: dense_block.get_submodule(rel)})
            assert xd is not None
        flat = x.detach().reshape(-1, x.shape[-1])  # (tokens, in)
        part = Moments.of(flat, None if xd is None else xd.detach().reshape(-1, xd.shape[-1]))
        total = part if total is None else total + part
    assert total is not None
    return group, total


def update_block(inputs: BlockInputs, block: nn.Module, dense_block: nn.Module, prefix: str,
                 dense: dict[str, torch.Tensor], advance: bool = True) -> dict[str, LayerUpdate]:
    """Re-solve A of each factored layer of `block` named in `dense` ({layer name: its dense weight (out, in)}),
    group after group in the order the block runs them, each on the inputs the block gives it with the groups
    before already updated, against what `dense_block` (the block before compression) gives on the dense
    model's inputs; then (with `advance`) move `inputs` on to the next block."""
    remaining: dict[str, nn.Module] = {}
    for name in dense:
        module = block.get_submodule(name[len(prefix) + 1:])
        if not isinstance(module, LowRankLinear):
            raise WeLoreError(f"layer {name} is not factored: only a factored layer's A can be re-solved")
        remaining[name] = module
    done: dict[str, LayerUpdate] = {}
    while remaining:
        group, moments = _first_group(inputs, block, dense_block, prefix, remaining)
        for name in group:
            layer = remaining.pop(name)
            assert isinstance(layer, LowRankLinear)
            weight, b, a = dense[name], layer.B.weight, layer.A.weight
            solved = solve_left(weight, b, moments)
            done[name] = LayerUpdate(output_error(weight, a, b, moments), output_error(weight, solved, b, moments))
            with torch.no_grad():
                a.copy_(solved.to(a.device, a.dtype))
    if advance:
        inputs.advance(block, dense_block)
    return done


def dense_copy(block: nn.Module) -> nn.Module:
    """The block as it is, before its layers are compressed: the dense model's block for the update."""
    return copy.deepcopy(block)


def dense_weights(module: nn.Module, names: list[str], prefix: str = "") -> dict[str, torch.Tensor]:
    """The dense weights (out, in) of the layers `names` (full names; `module` is the one at `prefix`), as they
    are now, by reference, not copied."""
    cut = len(prefix) + 1 if prefix else 0
    return {name: dense_weight(module.get_submodule(name[cut:]), name).detach() for name in names}
