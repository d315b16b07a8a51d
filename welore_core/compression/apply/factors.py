"""The factors of the low-rank layer (`models.LowRankLinear`): W (out x in) ≈ A · B with A = U_r √S_r and
B = √S_r V_rᵀ from the weight SVD (WeLore's default, data-agnostic), or from the activation-whitened SVD of
SVD-LLM (`whitened_factors`: truncate W L where XᵀX = L Lᵀ over calibration inputs, which minimises the error
the next layer sees). The square-root split of S keeps both factors at the same scale, which is what makes them
train well as LRCs (arXiv 2407.11239 §3).
"""
from __future__ import annotations

import torch

from ..spectra.calibration import damped_cholesky


def svd_factors(weight: torch.Tensor, rank: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A = U_r √S_r (out, r) and B = √S_r V_rᵀ (r, in) of the best rank-r approximation of `weight`."""
    u, s, vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)  # (out, k), (k,), (k, in)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def truncate_weight(weight: torch.Tensor, rank: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense rank-r truncation U_r S_r V_rᵀ (used where factoring would not save parameters)."""
    a, b = svd_factors(weight, rank, dtype)
    return a @ b


def whitened_factors(weight: torch.Tensor, rank: int, gram: torch.Tensor, damp: float,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-LLM factors: truncate W L (XᵀX = L Lᵀ), then undo the whitening on B: B = √Σ_r V_rᵀ L⁻¹."""
    chol = damped_cholesky(gram, damp)  # (in, in), lower
    w = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd((w @ chol).to(dtype), full_matrices=False)  # W L = U Σ Vᵀ
    root = s[:rank].sqrt()
    a = u[:, :rank] * root  # (out, r)
    # B = √Σ V_rᵀ L⁻¹, computed as a triangular solve: B L = √Σ V_rᵀ  <=>  Lᵀ Bᵀ = (√Σ V_rᵀ)ᵀ
    rhs = (root[:, None] * vh[:rank]).to(torch.float64)  # (r, in)
    b = torch.linalg.solve_triangular(chol.T, rhs.T, upper=True).T  # (r, in)
    return a.to(dtype), b.to(dtype)
