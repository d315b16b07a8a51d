"""Apply a rank plan to a loaded model (plan → apply): LRCs become `LowRankLinear`, optionally every layer.

`compress_to(model, target, config)` is the one way a model is compressed here (CLI, sweeps, fine-tuning,
dashboard). The target is a `RankPlan`, a rank map dict (validated against the schema: it may come from a
user's file), or a plain `{layer name: rank}` dict whose LRCs are the layers reduced by more than half; all
three become one rank map at the boundary (`plan.target.as_rankmap`).
Two explicit modes, recorded in every result:
  lrc — Low-Rank Components are factored, N-LRCs stay dense and untouched (the paper's fine-tuning
        set-up and the default);
  all — every layer gets its planned rank (the paper's compression tables; its code sets min_ratio to
        0 there): factored where that saves parameters, truncated in place (dense, rank r) where it would
        not, so no layer ever grows.
Factors come from the weight SVD (data-agnostic, WeLore's default) or, with `act_svd`, from the
activation-whitened SVD of SVD-LLM (see `actsvd`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from torch import nn

from ...errors import WeLoreError
from ...models import (LayerInfo, LowRankLinear, count_parameters, dense_weight, discover_layers, find_blocks,
                       linear_weight, placement, set_module)
from ...utils import Progress
from ..plan.target import Target, as_rankmap
from ..spectra.calibration import Calibration
from .factors import svd_factors, whitened_factors
from .folder import CompressionReport
from .update import UPDATE_TARGET, BlockInputs, dense_copy, dense_weights, update_block

MODES = ("lrc", "all")


@dataclass(frozen=True)
class CompressionConfig:
    mode: str = "lrc"  # "lrc" (factor LRCs only) or "all" (every layer at its planned rank)
    act_svd: bool = False  # activation-whitened SVD (needs calibration inputs) instead of weight SVD
    svd_dtype: str = "float32"  # precision of the factorisation; float64 for large, ill-conditioned layers
    damp: float = 1e-2  # ridge added to XᵀX (relative to its mean diagonal) before Cholesky, ActSVD only
    update: bool = False  # re-solve each factored layer's A on calibration outputs, layer after layer (`update`)
    device: str = "auto"  # where the SVDs run (and, for `welore compress`, where the model is loaded)
    weights_dtype: str = "auto"  # dtype the model is loaded in; a compressed folder keeps its input's dtype

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise WeLoreError(f"compression mode must be one of {MODES}, got {self.mode!r}")
        if self.svd_dtype not in ("float32", "float64"):
            raise WeLoreError(f"svd_dtype must be float32 or float64, got {self.svd_dtype!r}")
        if not self.damp > 0:
            raise WeLoreError(f"damp must be positive, got {self.damp!r}")
        self.placement()

    def placement(self) -> tuple[torch.device, torch.dtype]:
        """(device, weights dtype) with auto resolved."""
        return placement(self.device, self.weights_dtype, "compression")

    def identity(self, calib: Calibration | None = None, calib_digest: str = "") -> dict[str, Any]:
        """Everything besides the ranks that changes the compressed weights (part of a run's identity)."""
        extra: dict[str, Any] = {"svd_dtype": self.svd_dtype}
        if self.update:
            extra["update"] = UPDATE_TARGET
        if (self.act_svd or self.update) and calib is not None:
            extra.update(calib=calib_digest, calib_samples=calib.samples, calib_seqlen=calib.seqlen,
                         calib_seed=calib.seed, **({"damp": self.damp} if self.act_svd else {}))
        return extra


@dataclass(frozen=True)
class LayerTarget:
    layer: LayerInfo
    rank: int
    lrc: bool


def layer_targets(layers: list[LayerInfo], target: Target, owner: str) -> tuple[list[LayerTarget], dict[str, Any]]:
    """The layers a target changes, from the target in its one form (`as_rankmap`: checked against `layers`, every
    problem at once), and that rank map."""
    data = as_rankmap(target, layers, owner)
    known = {l.name: l for l in layers}
    return [LayerTarget(known[e["name"]], int(e["rank"]), bool(e["lrc"])) for e in data["layers"]], data


def compress_to(model: nn.Module, target: Target, config: CompressionConfig | None = None,
                grams: dict[str, torch.Tensor] | None = None, progress: Progress | None = None,
                batches: list[torch.Tensor] | None = None) -> CompressionReport:
    """Replace layers of `model` in place according to `target` (see the module docstring). With
    `config.update`, block after block: the block's layers are compressed, then its factored layers' A re-solved
    on the calibration `batches` (token ids, (1, seqlen) each) as the model compressed so far feeds them."""
    config = config or CompressionConfig()
    start = time.perf_counter()
    todo, data = layer_targets(discover_layers(model, with_head=True), target, type(model).__name__)
    if config.act_svd and grams is None:
        raise WeLoreError("act_svd needs calibration statistics: pass grams=collect_grams(model, batches, names)")
    if config.update and not batches:
        raise WeLoreError("the update needs calibration windows: pass batches=calibration_batches(...)[0]")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    for t in todo:
        if tied and head is not None and model.get_submodule(t.layer.name) is head and t.rank < t.layer.full_rank:
            raise WeLoreError(f"layer {t.layer.name} is tied to the input embedding: compressing it would change the "
                              "embedding too; drop it from the rank map (plan without --with-head)")
    report = CompressionReport(config.mode, config.act_svd, count_parameters(model), 0, rankmap=data)
    todo = [t for t in todo if (t.lrc if config.mode == "lrc" else t.rank < t.layer.full_rank)]
    todo.sort(key=lambda t: t.layer.block if t.layer.block >= 0 else len(todo) + 1 << 20)  # blocks in order, head last
    inputs = None
    if config.update:  # the first block's inputs, before anything changes
        prefix, blocks = find_blocks(model)
        inputs = BlockInputs(model, blocks[0], batches or [])
        last = max((t.layer.block for t in todo), default=-1)
    done = 0
    for block, group in groupby(todo, key=lambda t: t.layer.block):
        group = list(group)
        updating = inputs is not None and block >= 0
        if updating:
            assert inputs is not None
            while inputs.block < block:  # blocks with nothing compressed still move the inputs on
                inputs.advance(blocks[inputs.block], blocks[inputs.block])
            before = dense_copy(blocks[block])  # the dense model's block: its inputs and its weights
            dense = dense_weights(before, [t.layer.name for t in group], f"{prefix}.{block}")
        factored = []
        for t in group:
            if _compress_layer(model, t, grams, config, report):
                factored.append(t.layer.name)
            done += 1
            if progress:
                progress(done, len(todo), t.layer.name)
        if updating:
            assert inputs is not None
            report.updated.update(update_block(inputs, blocks[block], before, f"{prefix}.{block}",
                                               {n: dense[n] for n in factored}, advance=block < last))
    report.params_after = count_parameters(model)
    report.seconds = time.perf_counter() - start
    return report


def _compress_layer(model: nn.Module, t: LayerTarget, grams: dict[str, torch.Tensor] | None,
                    config: CompressionConfig, report: CompressionReport) -> bool:
    """One layer at its rank: factored (True) where that saves parameters or the mode asks, else truncated."""
    info, rank = t.layer, t.rank
    gram = grams.get(info.name) if grams is not None else None
    if config.act_svd and gram is None:
        raise WeLoreError(f"layer {info.name}: no calibration statistics collected")
    already = isinstance(model.get_submodule(info.name), LowRankLinear)  # re-compressing a compressed model
    if config.mode == "lrc" or already or info.factored_params(rank) < info.dense_params:
        factor_layer(model, info.name, rank, gram, config)
        report.factored[info.name] = rank
        return True
    truncate_layer(model, info.name, rank, gram, config)
    report.truncated[info.name] = rank
    return False


def _factors(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None,
             config: CompressionConfig) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    module = model.get_submodule(name)
    weight = dense_weight(module, name)  # (out, in), in the model's dtype and on its device
    return (module, weight, *factors_of(weight, rank, gram, config))


def _work_factors(weight: torch.Tensor, rank: int, gram: torch.Tensor | None,
                  config: CompressionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B on the config's device in svd_dtype (one layer at a time, whatever the stored dtype)."""
    dtype = getattr(torch, config.svd_dtype)
    work = config.placement()[0]
    if gram is not None:
        return whitened_factors(weight.to(work), rank, gram.to(work), config.damp, dtype)
    return svd_factors(weight.to(work), rank, dtype)


def factors_of(weight: torch.Tensor, rank: int, gram: torch.Tensor | None,
               config: CompressionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A (out, r) and B (r, in) of `weight` (out, in), returned in the weight's dtype and on its device."""
    a, b = _work_factors(weight, rank, gram, config)
    return a.to(weight.device, weight.dtype), b.to(weight.device, weight.dtype)


def truncated_of(weight: torch.Tensor, rank: int, gram: torch.Tensor | None, config: CompressionConfig) -> torch.Tensor:
    """The rank-r approximation A·B of `weight` (out, in), multiplied in svd_dtype on the config's device and
    rounded once to the weight's dtype (a bf16 product of bf16 factors would round twice)."""
    a, b = _work_factors(weight, rank, gram, config)
    return (a @ b).to(weight.device, weight.dtype)


def factor_layer(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None = None,
                 config: CompressionConfig | None = None) -> LowRankLinear:
    """Swap the linear layer `name` for a rank-`rank` LowRankLinear (same dtype, device and bias)."""
    module, weight, a, b = _factors(model, name, rank, gram, config or CompressionConfig())
    bias = getattr(module, "bias", None)
    new = LowRankLinear.from_factors(a, b, None if bias is None else bias.detach()).to(weight.device)
    set_module(model, name, new)
    return new


def truncate_layer(model: nn.Module, name: str, rank: int, gram: torch.Tensor | None = None,
                   config: CompressionConfig | None = None) -> None:
    """Overwrite the dense weight of `name` with its rank-`rank` approximation (shape unchanged)."""
    if isinstance(model.get_submodule(name), LowRankLinear):
        raise WeLoreError(f"layer {name} is already factored: re-factor it with factor_layer instead")
    module = model.get_submodule(name)
    weight = dense_weight(module, name)  # (out, in)
    found = linear_weight(module)
    assert found is not None
    with torch.no_grad():
        approx = truncated_of(weight, rank, gram, config or CompressionConfig())  # (out, in)
        found[0].copy_(approx.T if found[1] else approx)
