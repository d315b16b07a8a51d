"""Device names from users ("auto", "cpu", "cuda:1", "mps"), checked against this machine."""
from __future__ import annotations

import torch

from ..errors import WeLoreError

DEFAULT_THREADS = torch.get_num_threads()  # at import: what a new worker thread (a dashboard job) should run with


def parse_device(name: str, field: str = "device") -> torch.device:
    """A torch.device for `name`; "auto" is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WeLoreError(f"{field} must be auto, cpu, cuda[:N] or mps, got {name!r}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise WeLoreError(f"{field} {name!r}: no such CUDA device on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WeLoreError(f"{field} {name!r}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise WeLoreError(f"{field} must be auto, cpu, cuda[:N] or mps, got {name!r}")
    return device
