"""transformers, imported once under a lock.

transformers is a lazy module: `from transformers import AutoConfig` imports `transformers.models.auto…` on
first use. When two threads make that first use at once (two dashboard sessions, a page and a job), one can
see the submodule half-initialised and fail with "ImportError: cannot import name 'AutoConfig'". Every lazy
import of transformers in the core calls `transformers_ready()` first: the names the core uses are resolved in
one thread at a time, and afterwards every `from transformers import …` finds them complete.
"""
from __future__ import annotations

import threading
from typing import Any

NAMES = ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "LlamaConfig", "LlamaForCausalLM",
         "PreTrainedModel", "PreTrainedTokenizerFast")
_LOCK = threading.Lock()
_READY = False


def transformers_ready() -> Any:
    """The transformers module with `NAMES` resolved (once per process, under a lock)."""
    global _READY
    with _LOCK:
        import transformers

        if not _READY:
            for name in NAMES:
                getattr(transformers, name)
            _READY = True
        return transformers
