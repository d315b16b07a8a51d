"""Where a model's weights live and in which dtype: `--device` and `--weights-dtype` of every command that
loads a model, checked against this machine before anything is loaded.

`auto` weights are bfloat16 on a GPU (half the memory, the tensor cores' native type) and float32 on the CPU
(bfloat16 matmuls there are slower, not faster). float16 is refused on the CPU. A model whose weights do
not fit the device's free memory is refused with the sizes named. Every SVD or eigen step upcasts one layer
at a time, whatever the stored dtype (`compression.singular_values`, `compression.svd_factors`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WeLoreError
from ..utils import parse_device

WEIGHT_DTYPES = ("auto", "float32", "bfloat16", "float16")


def weights_dtype(name: str, device: torch.device | str, field: str = "weights dtype") -> torch.dtype:
    """The torch dtype weights are loaded in on `device` (resolving `auto`), or a one-line refusal."""
    if name not in WEIGHT_DTYPES:
        raise WeLoreError(f"{field} must be one of {', '.join(WEIGHT_DTYPES)}, got {name!r}")
    device = torch.device(device)
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "float16" and device.type == "cpu":
        raise WeLoreError(f"{field} float16 needs a GPU (the CPU has no fast float16 kernels); use bfloat16 or "
                          "float32 on the CPU")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def placement(device: str, dtype: str, field: str = "") -> tuple[torch.device, torch.dtype]:
    """(torch device, weights dtype) of a config's `device` and `weights_dtype` strings, both checked."""
    where = f"{field} " if field else ""
    resolved = parse_device(device, f"{where}device")
    return resolved, weights_dtype(dtype, resolved, f"{where}weights dtype")


def available_bytes(device: torch.device) -> int | None:
    """Free memory of a device: CUDA's free memory, or the host's MemAvailable (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            line = next(row for row in fh if row.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def check_fits(label: str | Path, params: int, device: torch.device, dtype: torch.dtype, margin: float = 1.1,
               copies: int = 1, held: str = "", advice: str = "use a smaller dtype (--weights-dtype bfloat16) or "
                                                               "another device") -> None:
    """Refuse a model of `params` parameters whose weights in `dtype` (plus 10 %) exceed the device's free memory;
    `copies` counts what training holds per parameter besides the weight (gradients, optimizer moments), `held`
    names it in the message."""
    need = int(params * dtype.itemsize * copies * margin)
    free = available_bytes(device)
    if free is not None and need > free:
        what = f" ({held})" if held else ""
        raise WeLoreError(f"{label}: {params / 1e9:.2f}B parameters need about {need / 2**30:.1f} GiB in "
                          f"{dtype_name(dtype)}{what} on {device}, which has {free / 2**30:.1f} GiB free; {advice}")
