"""Apply a rank map to a loaded model (plan → apply): LRCs become `LowRankLinear`, optionally every layer.

Two explicit modes, recorded in every result:
  lrc — Low-Rank Components are factored, N-LRCs stay dense and untouched (the paper's fine-tuning
        set-up and the default);
  all — every layer gets its planned rank (the paper's compression tables; its code sets min_ratio to
        0 there): factored where that saves parameters, truncated in place (dense, rank r) where it would
        not, so no layer ever grows.
Factors come from the weight SVD (data-agnostic, WeLore's default) or, with `act_svd`, from the
activation-whitened SVD of SVD-LLM (Wang et al. 2024): with XᵀX = L Lᵀ over calibration inputs,
truncating W L instead of W minimises ‖(W − W')X‖_F, the error the next layer actually sees.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .errors import RankMapError, WeLoreError
from .layers import LayerInfo, discover_layers, linear_weight
from .lowrank import LowRankLinear, svd_factors
from .rankmap import check_rankmap, read_rankmap

Progress = Callable[[int, int, str], None]
MODES = ("lrc", "all")


@dataclass(frozen=True)
class CompressionConfig:
    mode: str = "lrc"  # "lrc" (factor LRCs only) or "all" (every layer at its planned rank)
    act_svd: bool = False  # activation-whitened SVD (needs calibration inputs) instead of weight SVD
    svd_dtype: str = "float32"  # precision of the factorisation; float64 for large, ill-conditioned layers
    damp: float = 1e-2  # ridge added to XᵀX (relative to its mean diagonal) before Cholesky, ActSVD only

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise WeLoreError(f"compression mode must be one of {MODES}, got {self.mode!r}")
        if self.svd_dtype not in ("float32", "float64"):
            raise WeLoreError(f"svd_dtype must be float32 or float64, got {self.svd_dtype!r}")
        if not self.damp > 0:
            raise WeLoreError(f"damp must be positive, got {self.damp!r}")


@dataclass
class CompressionReport:
    mode: str
    act_svd: bool
    params_before: int
    params_after: int
    factored: dict[str, int] = field(default_factory=dict)  # layer -> rank, replaced by LowRankLinear
    truncated: dict[str, int] = field(default_factory=dict)  # layer -> rank, kept dense at rank r
    seconds: float = 0.0

    def bytes(self, dtype_bytes: int) -> tuple[int, int]:
        return self.params_before * dtype_bytes, self.params_after * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    """Parameters of a model, tied ones counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _dense_weight(module: nn.Module, layer: str) -> torch.Tensor:
    found = linear_weight(module)
    if found is None:
        raise WeLoreError(f"layer {layer}: {type(module).__name__} is not a linear layer")
    weight, transposed = found
    return weight.detach().T if transposed else weight.detach()  # (out, in)


def compress_model(model: nn.Module, rankmap: dict[str, Any], config: CompressionConfig | None = None,
                   grams: dict[str, torch.Tensor] | None = None, progress: Progress | None = None) -> CompressionReport:
    """Replace layers of `model` in place according to a (schema-valid) rank map; returns what was done."""
    config = config or CompressionConfig()
    start = time.perf_counter()
    data = read_rankmap(rankmap)
    layers = {l.name: l for l in discover_layers(model, with_head=True)}
    problems = check_rankmap(data, list(layers.values()))
    if problems:
        raise RankMapError(f"rank map for {data['model']!r} does not fit this model", problems)
    if config.act_svd and grams is None:
        raise WeLoreError("act_svd needs calibration statistics: pass grams=collect_grams(model, batches, names)")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    for entry in data["layers"]:
        if tied and head is not None and model.get_submodule(entry["name"]) is head and entry["rank"] < entry["full_rank"]:
            raise WeLoreError(f"layer {entry['name']} is tied to the input embedding: compressing it would change the "
                              "embedding too; drop it from the rank map (plan without --with-head)")
    report = CompressionReport(config.mode, config.act_svd, count_parameters(model), 0)
    todo = [e for e in data["layers"] if (e["lrc"] if config.mode == "lrc" else e["rank"] < e["full_rank"])]
    for i, entry in enumerate(todo, 1):
        info: LayerInfo = layers[entry["name"]]
        rank = int(entry["rank"])
        gram = grams.get(info.name) if grams is not None else None
        if config.act_svd and gram is None:
            raise WeLoreError(f"layer {info.name}: no calibration statistics collected")
        already = isinstance(model.get_submodule(info.name), LowRankLinear)  # re-compressing a compressed model
        if config.mode == "lrc" or already or info.factored_params(rank) < info.dense_params:
            factor_layer(model, info.name, rank, gram, config)
            report.factored[info.name] = rank
        else:
            truncate_layer(model, info.name, rank, gram, config)
            report.truncated[info.name] = rank
        if progress:
            progress(i, len(todo), info.name)
    report.params_after = count_parameters(model)
    report.seconds = time.perf_counter() - start
    return report


def _factors(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None,
             config: CompressionConfig) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    module = model.get_submodule(name)
    weight = _dense_weight(module, name)  # (out, in)
    dtype = getattr(torch, config.svd_dtype)
    if gram is not None:
        a, b = whitened_factors(weight, rank, gram, config.damp, dtype)
    else:
        a, b = svd_factors(weight, rank, dtype)
    return module, weight, a.to(weight.dtype), b.to(weight.dtype)


def factor_layer(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None = None,
                 config: CompressionConfig | None = None) -> LowRankLinear:
    """Swap the linear layer `name` for a rank-`rank` LowRankLinear (same dtype, device and bias)."""
    module, weight, a, b = _factors(model, name, rank, gram, config or CompressionConfig())
    bias = getattr(module, "bias", None)
    new = LowRankLinear.from_factors(a, b, None if bias is None else bias.detach()).to(weight.device)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)  # peft-style replacement
    return new


def truncate_layer(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None = None,
                   config: CompressionConfig | None = None) -> None:
    """Overwrite the dense weight of `name` with its rank-`rank` approximation (shape unchanged)."""
    if isinstance(model.get_submodule(name), LowRankLinear):
        raise WeLoreError(f"layer {name} is already factored: re-factor it with factor_layer instead")
    module, _, a, b = _factors(model, name, rank, gram, config or CompressionConfig())
    found = linear_weight(module)
    assert found is not None
    with torch.no_grad():
        approx = a @ b  # (out, in)
        found[0].copy_(approx.T if found[1] else approx)


def whitened_factors(weight: torch.Tensor, rank: int, gram: torch.Tensor, damp: float,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-LLM factors: truncate W L (XᵀX = L Lᵀ), then undo the whitening on B: B = √Σ_r V_rᵀ L⁻¹."""
    g = gram.to(torch.float64)
    g = g + damp * g.diagonal().mean().clamp_min(1e-12) * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    chol = torch.linalg.cholesky(g)  # (in, in), lower
    w = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd((w @ chol).to(dtype), full_matrices=False)  # W L = U Σ Vᵀ
    root = s[:rank].sqrt()
    a = u[:, :rank] * root  # (out, r)
    # B = √Σ V_rᵀ L⁻¹, computed as a triangular solve: B L = √Σ V_rᵀ  <=>  Lᵀ Bᵀ = (√Σ V_rᵀ)ᵀ
    rhs = (root[:, None] * vh[:rank]).to(torch.float64)  # (r, in)
    b = torch.linalg.solve_triangular(chol.T, rhs.T, upper=True).T  # (r, in)
    return a.to(dtype), b.to(dtype)


def collect_grams(model: nn.Module, batches: list[torch.Tensor], names: list[str],
                  progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """XᵀX / tokens (in, in): second moments of the inputs reaching each named layer over calibration
    batches of token ids (averaged, so the A/B balance does not depend on how much data was used)."""
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float32)  # (tokens, in)
            g = x.T @ x
            grams[name] = grams[name] + g if name in grams else g
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    for name in names:
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook_for(name)))
    model.eval()  # no dropout noise in the statistics
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            for i, batch in enumerate(batches, 1):
                model(input_ids=batch.to(device), use_cache=False)
                if progress:
                    progress(i, len(batches), "calibration")
    finally:
        for h in hooks:
            h.remove()
    return {name: g / counts[name] for name, g in grams.items()}
