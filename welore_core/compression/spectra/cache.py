"""On-disk cache of singular values: one checksummed record per layer, written atomically.

Layout: `<cache>/spectra/<fingerprint[:16]>/<dtype>-<method>/` holding `meta.json` (model label, layer
list, parameter count) and one `<layer name>.sv` record per layer. A record is

    b"WLSV1\\n" | uint32 header length | JSON header {name, dtype, n, sha256} | raw values

so a truncated or altered record is detected (length or hash mismatch), reported and recomputed.
Records are written as each layer finishes, which is what makes an interrupted run resumable; a file
lock around the compute phase lets a second process wait and then read instead of recomputing.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from ...models import LayerInfo
from ...utils import atomic_write_bytes, atomic_write_text

MAGIC = b"WLSV1\n"
META_VERSION = 1


class CorruptRecord(Exception):
    """A cache record that cannot be trusted; the message says why."""


def encode_record(name: str, values: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(values).tobytes()
    header = json.dumps({"name": name, "dtype": values.dtype.str, "n": int(values.size),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + payload


def decode_record(blob: bytes, name: str) -> np.ndarray:
    if not blob.startswith(MAGIC):
        raise CorruptRecord("bad magic bytes")
    start = len(MAGIC) + 4
    size = int.from_bytes(blob[len(MAGIC):start], "little")
    try:
        header = json.loads(blob[start:start + size])
        dtype = np.dtype(header["dtype"])
        count = int(header["n"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptRecord(f"unreadable header ({err})") from None
    payload = blob[start + size:]
    if header.get("name") != name:
        raise CorruptRecord(f"holds layer {header.get('name')!r}")
    if len(payload) != count * dtype.itemsize:
        raise CorruptRecord(f"truncated: {len(payload)} of {count * dtype.itemsize} value bytes")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CorruptRecord("checksum mismatch")
    return np.frombuffer(payload, dtype=dtype).copy()


def _file_name(layer: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    if safe != layer:  # keep distinct names distinct after sanitising
        safe += "-" + hashlib.sha1(layer.encode()).hexdigest()[:8]
    return safe + ".sv"


class SpectraCache:
    """The records of one model fingerprint and one spectra setting (dtype, method)."""

    def __init__(self, root: Path, fingerprint: str, setting: str) -> None:
        self.dir = root / "spectra" / fingerprint[:16] / setting
        self.fingerprint = fingerprint

    def record_path(self, layer: str) -> Path:
        return self.dir / _file_name(layer)

    def load(self, sizes: dict[str, int]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Values of the layers (name -> expected length) with a valid record, and a note per bad record."""
        values: dict[str, np.ndarray] = {}
        notes: list[str] = []
        for name, size in sizes.items():
            path = self.record_path(name)
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                values[name] = decode_record(blob, name)
                if values[name].size != size:
                    del values[name]
                    raise CorruptRecord(f"holds {len(blob)} bytes for a layer of rank {size}")
            except CorruptRecord as err:
                notes.append(f"cache record {path} is corrupted ({err}); recomputing layer {name}")
        return values, notes

    def save(self, name: str, values: np.ndarray) -> None:
        atomic_write_bytes(self.record_path(name), encode_record(name, values))

    def load_meta(self, discovery: str) -> dict[str, Any] | None:
        """The cached layer list, if it was discovered the same way (same config, same discovery code)."""
        try:
            meta = json.loads((self.dir.parent / "meta.json").read_text())
            stored = (meta.get("version"), meta.get("fingerprint"), meta.get("discovery"))
            if stored != (META_VERSION, self.fingerprint, discovery):
                return None
            meta["layers"] = [LayerInfo(**{**l, "shape": tuple(l["shape"])}) for l in meta["layers"]]
            return meta
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_meta(self, label: str, layers: list[LayerInfo], total_params: int, discovery: str,
                  notes: list[str]) -> None:
        meta = {"version": META_VERSION, "fingerprint": self.fingerprint, "discovery": discovery, "model": label,
                "total_params": total_params, "notes": notes, "layers": [asdict(l) for l in layers]}
        atomic_write_text(self.dir.parent / "meta.json", json.dumps(meta))

    def lock(self) -> FileLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir / ".lock"))
