"""Model fingerprints: a changed model must never reuse stale spectra.

Files are fingerprinted by their SHA-256 (memoised per path, size and mtime so a second look is a stat);
an in-memory model by the bytes, names, shapes and dtypes of the weights that are analysed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import torch

from ..errors import WeLoreError
from ..utils import atomic_write_bytes, cache_dir, regular_file
from .layers import LayerInfo, linear_weight
from .source import ModelSource

_CHUNK = 1 << 24


def file_sha256(path: Path, memo_dir: Path | None = None) -> str:
    """SHA-256 of a file's bytes, memoised in `memo_dir` under (absolute path, size, mtime_ns)."""
    path = path.resolve()
    st = regular_file(path, "weight")  # a device (a link to /dev/zero) would be hashed forever
    # ctime and inode change on any rewrite, even one that restores size and mtime with os.utime
    key = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
           "inode": st.st_ino}
    memo = memo_dir / (hashlib.sha1(str(path).encode()).hexdigest() + ".json") if memo_dir else None
    if memo is not None:
        try:
            saved = json.loads(memo.read_text())
            if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
                return str(saved["sha256"])
        except (OSError, ValueError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    if memo is not None:
        atomic_write_bytes(memo, json.dumps({**key, "sha256": value}).encode())
    return value


def files_fingerprint(files: Iterable[Path], memo_dir: Path | None = None) -> str:
    """Fingerprint of a set of weight files: hash of (file name, file hash) pairs in name order."""
    digest = hashlib.sha256(b"welore.files/v1\n")
    for path in sorted(files, key=lambda p: p.name):
        digest.update(f"{path.name}:{file_sha256(path, memo_dir)}\n".encode())
    return digest.hexdigest()


def module_fingerprint(model: torch.nn.Module, layers: list[LayerInfo]) -> str:
    """Fingerprint of an in-memory model: names, shapes, dtypes and bytes of the analysed weights."""
    digest = hashlib.sha256(b"welore.tensors/v1\n")
    for layer in layers:
        found = linear_weight(model.get_submodule(layer.name))
        assert found is not None, layer.name
        weight = found[0].detach()
        digest.update(f"{layer.name}:{list(weight.shape)}:{weight.dtype}\n".encode())
        raw = weight.contiguous().view(-1).view(torch.uint8)  # bytes of any dtype, bf16 included
        digest.update(raw.cpu().numpy().tobytes() if raw.device.type != "cpu" else memoryview(raw.numpy()))
    return digest.hexdigest()


def source_fingerprint(source: ModelSource) -> str:
    """Fingerprint of a source's safetensors files (a compressed folder's included), memoised under the cache."""
    files = source.safetensors_files()
    if not files:
        raise WeLoreError(f"{source.path}: no safetensors weights to fingerprint")
    return files_fingerprint(files, cache_dir() / "fingerprints")


def dense_source(source: ModelSource, instead: str = "name the dense model") -> ModelSource:
    """The dense model the compressed folder `source` was made from: its manifest's path, then its name, accepted
    only with the weights the folder records; else a one-line error ending in `instead`."""
    from .compressed import read_manifest
    from .source import resolve_model

    manifest = read_manifest(source.path)
    expected = manifest.get("base_fingerprint")
    for spec in (manifest.get("base_path"), manifest.get("base_model")):
        if not spec:
            continue
        try:
            candidate = resolve_model(spec)
            if candidate.kind != "compressed" and source_fingerprint(candidate) == expected:
                return candidate
        except (OSError, WeLoreError):
            continue
    raise WeLoreError(f"{source.path}: the dense model it was made from ({manifest.get('base_model') or '?'}, at "
                      f"{manifest.get('base_path') or 'no recorded path'}) is not there with the weights the folder "
                      f"records; {instead}")
