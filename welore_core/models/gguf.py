"""GGUF files (the embedded SmolLM2 is one): dequantized by transformers once into a float32 safetensors
folder, written atomically under a file lock, so later loads and streamed spectra read plain safetensors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import WeLoreError
from ..utils import atomic_folder, transformers_ready
from .build import building


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF into a float32 safetensors model folder once (atomic, lock-protected)."""
    marker = out / "welore-source.json"
    stamp = {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size}
    if _stamp_ok(marker, stamp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(str(out) + ".lock")
    try:
        with FileLock(str(lock)):
            if not _stamp_ok(marker, stamp):  # another process may have converted it while we waited
                _convert(gguf, out, marker, stamp)
    except BaseException:
        if not out.exists():  # nothing was converted: leave no empty lock file behind in cache/models
            lock.unlink(missing_ok=True)
        raise
    return out


def _convert(gguf: Path, out: Path, marker: Path, stamp: dict[str, Any]) -> None:
    import torch
    transformers_ready()  # the first import, one thread at a time
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with building():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:
        raise WeLoreError(f"{gguf}: transformers could not load this GGUF ({type(err).__name__}: {err})") from None
    # the folder holds plain float32 weights: it must not be re-read as a GGUF-quantized model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    needed = sum(p.numel() * p.element_size() for p in model.parameters()) + 2**20
    with atomic_folder(out, needed=needed) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / marker.name).write_text(json.dumps(stamp, indent=1))


def _stamp_ok(marker: Path, stamp: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == stamp)
    except (OSError, ValueError):
        return False
