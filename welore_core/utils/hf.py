"""transformers, imported once under a lock; and the config of a folder as the core builds models from it.

transformers is a lazy module: `from transformers import AutoConfig` imports `transformers.models.auto…` on
first use. When two threads make that first use at once (two dashboard sessions, a page and a job), one can
see the submodule half-initialised and fail with "ImportError: cannot import name 'AutoConfig'". Every lazy
import of transformers in the core calls `transformers_ready()` first: the names the core uses are resolved in
one thread at a time, and afterwards every `from transformers import …` finds them complete.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..errors import WeLoreError

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


def base_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The base architecture's config dict of a compressed folder's config (unchanged for other configs)."""
    welore = config.get("welore")
    if not isinstance(welore, dict):
        return config
    out = {k: v for k, v in config.items() if k not in ("welore", "auto_map")}
    out.update(model_type=welore.get("base_model_type"), architectures=[welore.get("base_architecture")])
    return out


def read_config(folder: Path) -> Any:
    """The transformers config of `folder`: for a compressed folder, its base architecture's config."""
    transformers_ready()
    from transformers import AutoConfig

    from .files import read_json

    path = folder / "config.json"
    data = read_json(path, "config")
    if not isinstance(data.get("welore"), dict):
        return AutoConfig.from_pretrained(folder)
    base = base_config_dict(data)
    try:
        return AutoConfig.for_model(str(base.pop("model_type")), **base)
    except (ValueError, TypeError, KeyError) as err:
        raise WeLoreError(f"{path}: base model type {data['welore'].get('base_model_type')!r} does not load ({err})") \
            from None


def tokenizer_config(folder: Path) -> dict[str, Any]:
    """Keyword arguments for `AutoTokenizer.from_pretrained(folder)`: a compressed folder's base config, so that
    transformers does not read config.json itself (it would ask for trust_remote_code)."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {"config": read_config(Path(folder))} if isinstance(data, dict) and isinstance(data.get("welore"), dict) else {}
