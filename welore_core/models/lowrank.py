"""The low-rank linear layer of WeLore: W (out x in) ≈ A · B with A = U_r √S_r, B = √S_r V_rᵀ.

    y = A (B x) + b,    B: (r x in),  A: (out x r)

Two plain `nn.Linear`s (B then A) so that gradients, optimisers, PEFT adapters and `state_dict` names
(`<layer>.B.weight`, `<layer>.A.weight`, `<layer>.A.bias`) all behave as for any dense layer; the
square-root split of S keeps both factors at the same scale, which is what makes them train well as
LRCs (arXiv 2407.11239 §3). Parameters: r·(in + out) (+ out for the bias) instead of in·out. The factors
themselves are computed in `compression.apply.factors`; here is the layer that holds them, which loading a
compressed folder needs without any of the method.
"""
from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """A rank-`rank` factorisation of a linear layer; behaves like `nn.Linear(in_features, out_features)`."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank {rank} outside [1, {min(in_features, out_features)}] for a "
                             f"{out_features}x{in_features} layer")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.B = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)  # (r, in)
        self.A = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)  # (out, r)

    @classmethod
    def from_factors(cls, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> "LowRankLinear":
        """Wrap given factors a (out, r) and b (r, in) without copying their values' dtype or device."""
        layer = cls(b.shape[1], a.shape[0], a.shape[1], bias=bias is not None, device=a.device, dtype=a.dtype)
        with torch.no_grad():
            layer.A.weight.copy_(a)
            layer.B.weight.copy_(b)
            if bias is not None:
                layer.A.bias.copy_(bias)
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The dense equivalent A·B (out, in); computed on demand, for analysis and tests."""
        return self.A.weight @ self.B.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.A.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self.B(x))  # (..., in) -> (..., r) -> (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
