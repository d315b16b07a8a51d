"""Building models safely in a multi-threaded process (the dashboard runs jobs in threads).

transformers and accelerate change class attributes for the whole process while they build a model; this
module keeps those changes from leaking into another thread's build: one build at a time (`building`), and
a meta-device context for parameters that is per thread (`empty_weights`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

_EMPTY = threading.local()  # per thread: how many empty_weights() blocks are open
_INSTALL = threading.Lock()
# transformers swaps class attributes while it builds a model (from_pretrained replaces PreTrainedModel.tie_weights
# with a no-op until it is done), so two threads building at once — two dashboard jobs — can leave a tied head
# untied, on the meta device, or tie_weights disabled for good: every build in this process takes this lock
_BUILD = threading.RLock()


@contextmanager
def building() -> Iterator[None]:
    """Hold while transformers instantiates a model (from_pretrained, from_config, a model class's __init__)."""
    with _BUILD:
        yield


@contextmanager
def empty_weights() -> Iterator[None]:
    """Parameters created by this thread inside the block land on the meta device (no memory); buffers (rotary
    tables) stay real. Unlike accelerate's init_empty_weights, which swaps nn.Module.register_parameter for
    every thread while it is open, other threads — a second dashboard job loading a model — are unaffected."""
    _install_register_hook()
    _EMPTY.depth = getattr(_EMPTY, "depth", 0) + 1
    try:
        yield
    finally:
        _EMPTY.depth -= 1


def _install_register_hook() -> None:
    """Once per process: register_parameter moves new parameters to meta while this thread is in empty_weights()."""
    import torch
    from torch import nn

    with _INSTALL:
        if getattr(nn.Module.register_parameter, "_welore_empty", False):
            return
        original = nn.Module.register_parameter

        def register_parameter(module: nn.Module, name: str, param: Any) -> None:
            original(module, name, param)
            if param is not None and getattr(_EMPTY, "depth", 0):
                stored = module._parameters[name]
                assert stored is not None
                module._parameters[name] = nn.Parameter(stored.to(torch.device("meta")),
                                                        requires_grad=param.requires_grad)

        register_parameter._welore_empty = True  # type: ignore[attr-defined]
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
