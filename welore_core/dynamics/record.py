"""One record of the gradient-dynamics lab (arXiv 2407.11239 §2, Figures 2, 3 and 9).

At a checkpoint, on one fixed probe batch, every linear layer of the decoder blocks yields:

- `grad_sv/<name>`, `weight_sv/<name>`: descending singular values of the gradient and of the weight
  (float32 `torch.linalg.svdvals`, as `compression.singular_values` computes them);
- `grad_norm/<name>`: the gradient's Frobenius norm;
- `sketch/<name>`: a count sketch of the flattened gradient (below), always;
- `grad/<name>`: the whole gradient as a unit vector in float16, when it has at most `full_max` entries.

Cosine similarity across checkpoints needs only directions, so the full gradient is stored divided by
its norm: float16 then keeps a relative precision of 2^-11 per entry and no entry underflows that
matters (a unit vector's typical entry is 1/sqrt(n), far above float16's 6e-8), so stored cosines are
within ~1e-3 of float32 ones.

Count sketch (Charikar et al. 2002): with a hash h: [n] -> [m] and signs σ: [n] -> {±1}, fixed per
layer by a seed, S(g)[j] = Σ_{h(i)=j} σ(i) g_i. It is linear and unbiased for inner products,
E<S(x), S(y)> = <x, y>, with Var = (||x||²||y||² + <x,y>² − 2 Σ x_i² y_i²) / m, the same as a dense
Gaussian projection but computed in O(n) with no m × n matrix. The cosine of two sketches therefore
estimates the cosine c of the gradients with a standard error of about (1 − c²) / sqrt(m): 0.016 at
c = 0 for the default m = 4096, and smaller for the near-parallel gradients that matter here. Since
the hash is the same at every checkpoint, sketches of one layer are comparable across the whole run.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from ..compression.spectra import SpectraConfig, singular_values
from ..models import LayerInfo, linear_weight

FIELDS = ("grad_sv", "weight_sv", "grad_norm", "sketch", "grad")
_SVD = SpectraConfig(device="cpu")  # float32 svdvals, on the device the gradients live on


def sketch_seed(seed: int, name: str) -> int:
    """The hash seed of one layer: fixed for a run, so its sketches are comparable across checkpoints."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


def count_sketch(flat: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """The count sketch S(x) in R^dim of a 1-D tensor (float32 on the CPU); linear in x."""
    gen = torch.Generator().manual_seed(seed)
    n = flat.numel()
    bucket = torch.randint(0, dim, (n,), generator=gen)  # h(i)
    sign = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)  # σ(i)
    return torch.zeros(dim).index_add_(0, bucket, flat.detach().float().cpu() * sign)


def probe_gradients(model: nn.Module, layers: list[LayerInfo], batch: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss on the probe batch (B, T) and each layer's weight gradient as (out, in), then grads cleared.

    Leaves no gradient behind, so recording between training steps does not change the training.
    """
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    grads: dict[str, torch.Tensor] = {}
    for layer in layers:
        found = linear_weight(model.get_submodule(layer.name))
        assert found is not None and found[0].grad is not None, layer.name
        grad = found[0].grad.detach()
        grads[layer.name] = grad.T if found[1] else grad  # (out, in)
    model.zero_grad(set_to_none=True)  # the tensors in `grads` stay alive, detached from the parameters
    return float(loss.detach()), grads


def record_checkpoint(model: nn.Module, layers: list[LayerInfo], batch: torch.Tensor, sketch_dim: int,
                      full_max: int, seed: int) -> dict[str, np.ndarray]:
    """Everything recorded at one checkpoint, as arrays keyed `<field>/<layer name>` plus `probe_loss`."""
    loss, grads = probe_gradients(model, layers, batch)
    arrays: dict[str, np.ndarray] = {"probe_loss": np.asarray(loss, dtype=np.float64)}
    for layer in layers:
        found = linear_weight(model.get_submodule(layer.name))
        assert found is not None
        weight = found[0].detach()
        weight = weight.T if found[1] else weight  # (out, in)
        grad = grads[layer.name]
        flat = grad.reshape(-1).float().cpu()  # (out·in,)
        norm = float(flat.norm())
        arrays[f"grad_sv/{layer.name}"] = singular_values(grad, _SVD, grad.device)
        arrays[f"weight_sv/{layer.name}"] = singular_values(weight, _SVD, weight.device)
        arrays[f"grad_norm/{layer.name}"] = np.asarray(norm, dtype=np.float64)
        arrays[f"sketch/{layer.name}"] = count_sketch(flat, sketch_dim, sketch_seed(seed, layer.name)).numpy()
        if flat.numel() <= full_max:
            unit = flat / norm if norm > 0 else flat
            arrays[f"grad/{layer.name}"] = unit.half().numpy()
    return arrays
