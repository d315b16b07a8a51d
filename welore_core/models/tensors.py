"""Reading safetensors checkpoints without loading them: headers (names, shapes, dtypes), parameter counts,
stored dtypes, and tensors streamed one at a time so memory is bounded by the largest tensor.

Tensors are read with plain reads into their own buffer, not through a memory map: a mapped shard's pages count
towards the process's resident memory as they are touched (a 4 GiB shard read through safetensors' mmap leaves
4 GiB resident). `ShardWriter` writes a safetensors file tensor by tensor in the same spirit: the header is
written first from the announced names, dtypes and shapes, then each tensor's bytes as it is produced."""
from __future__ import annotations

import json
import math
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..errors import WeLoreError
from ..utils import regular_file

TensorIndex = dict[str, tuple[Path, tuple[int, ...], str]]  # name -> (file, shape, safetensors dtype)
TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
STORED_DTYPES = {**TORCH_DTYPES, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                 "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
SAFETENSORS_NAMES = {dtype: name for name, dtype in STORED_DTYPES.items()}


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets), without reading data."""
    return _header(path)[0]


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """The header, and the byte offset where the tensor data starts (offsets in the header count from there).
    Every entry is checked against the file here, the one place all readers pass: a known dtype, a shape whose
    bytes its offsets span, and data that lies inside the file (a 193-byte file claiming a 40 GB tensor is
    refused, not allocated)."""
    try:
        size = regular_file(path, "safetensors").st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > min(100_000_000, size - 8):
                raise ValueError(f"header length {length} is implausible for a file of {size} bytes")
            header = json.loads(fh.read(length))
    except (OSError, ValueError, WeLoreError) as err:
        raise WeLoreError(f"{path}: not a readable safetensors file ({str(err).removeprefix(f'{path}: ')})") from None
    if not isinstance(header, dict):
        raise WeLoreError(f"{path}: not a readable safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    room = size - 8 - length
    for name, info in header.items():
        problem = _entry_problem(info, room)
        if problem:
            raise WeLoreError(f"{path}: not a readable safetensors file (tensor {name}: {problem})")
    return header, 8 + length


def _entry_problem(info: Any, room: int) -> str:
    """What is wrong with one header entry of a file holding `room` bytes of tensor data ("" when nothing)."""
    try:
        shape = [int(d) for d in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        dtype = STORED_DTYPES.get(info["dtype"])  # another dtype (U32, F4, ...): only its span is checked
    except (KeyError, TypeError, ValueError) as err:
        return f"malformed entry ({type(err).__name__}: {err})"
    if any(d < 0 for d in shape):
        return f"negative dimension in shape {shape}"
    if not 0 <= begin <= end:
        return f"offsets [{begin}, {end}] are not a range"
    need = end - begin if dtype is None else dtype.itemsize * math.prod(shape)
    if end - begin != need:
        return f"offsets [{begin}, {end}] do not span the {need:,} bytes of {info['dtype']} {shape}"
    if end > room:
        return f"claims bytes up to {end:,} but the file holds {room:,} bytes of tensor data"
    return ""


def tensor_index(files: Iterable[Path]) -> TensorIndex:
    """Every tensor in the weight files: name -> (file, shape, safetensors dtype)."""
    index: TensorIndex = {}
    for file in files:
        for name, info in read_header(file).items():
            if name in index:
                raise WeLoreError(f"tensor {name} is in both {index[name][0]} and {file}; pass one file or an index")
            index[name] = (file, tuple(int(d) for d in info["shape"]), str(info["dtype"]))
    return index


def index_params(index: TensorIndex) -> int:
    """Elements in all tensors of an index (a tied head stored once is counted once)."""
    total = 0
    for _, shape, _ in index.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def stored_dtypes(files: Iterable[Path]) -> tuple[dict[str, torch.dtype], torch.dtype]:
    """The torch dtype each floating tensor is stored in, and the dtype holding most of the elements."""
    dtypes: dict[str, torch.dtype] = {}
    weight: dict[torch.dtype, int] = {}
    for name, (_, shape, stored) in tensor_index(files).items():
        dtype = TORCH_DTYPES.get(stored)
        if dtype is not None:
            dtypes[name] = dtype
            weight[dtype] = weight.get(dtype, 0) + index_params({name: (Path(), shape, stored)})
    return dtypes, max(weight, key=weight.__getitem__) if weight else torch.float32


def stream_tensors(index: TensorIndex, names: list[str], where: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The named tensors one at a time, grouped by shard so each file is opened once (`where` names the model
    in errors). Only the tensor being yielded is in memory."""
    by_file: dict[Path, list[str]] = defaultdict(list)
    for name in names:
        if name not in index:
            raise WeLoreError(f"{where}: tensor {name} is in no weight file")
        by_file[index[name][0]].append(name)
    for file, group in by_file.items():
        with ShardReader(file) as reader:
            for name in group:
                yield name, reader.get(name)


class ShardReader:
    """One safetensors file, read a tensor at a time with plain reads (see the module's note on memory maps).
    A damaged or truncated file is one line naming it and the tensor."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.header, self.start = _header(self.path)
        self._fh: Any = None

    def __enter__(self) -> "ShardReader":
        try:
            self._fh = open(self.path, "rb")
        except OSError as err:
            raise WeLoreError(f"{self.path}: cannot read weights ({err})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def get(self, name: str) -> torch.Tensor:
        info = self.header.get(name)
        if info is None:
            raise WeLoreError(f"{self.path}: no tensor {name}")
        try:
            dtype = STORED_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
            size = dtype.itemsize * math.prod(shape)
            if end - begin != size:
                raise ValueError(f"its offsets span {end - begin} bytes, its dtype and shape need {size}")
            buffer = torch.empty(size, dtype=torch.uint8)
            self._fh.seek(self.start + begin)
            got = self._fh.readinto(memoryview(buffer.numpy())) if size else 0
            if got != size:
                raise ValueError(f"the file ends {size - got} bytes early")
        except (KeyError, TypeError, ValueError, OSError) as err:
            raise WeLoreError(f"{self.path}: cannot read weights (tensor {name}: {err})") from None
        return buffer.view(dtype).reshape(shape)


class ShardWriter:
    """A safetensors file written tensor by tensor: `entries` (name -> (dtype, shape), in writing order) fix
    the header up front; `write` then takes each tensor in that order, so memory holds one tensor at a time.
    The file loads with safetensors / transformers like one written by `save_file`."""

    def __init__(self, path: Path, entries: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self.path, self.entries = Path(path), dict(entries)
        header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for name, (dtype, shape) in self.entries.items():
            size = dtype.itemsize * math.prod(shape)
            header[name] = {"dtype": SAFETENSORS_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        self._head = struct.pack("<Q", len(text) + (-len(text)) % 8) + text + b" " * ((-len(text)) % 8)
        self._order = iter(self.entries)
        self._fh: Any = None

    def __enter__(self) -> "ShardWriter":
        self._fh = open(self.path, "wb")
        self._fh.write(self._head)
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = next(self._order, None)
        dtype, shape = self.entries.get(name, (None, None))
        if name != expected or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape or ()):
            raise WeLoreError(f"{self.path}: tensor {name} ({tensor.dtype}, {tuple(tensor.shape)}) is not the next "
                              f"announced one ({expected}: {dtype}, {shape})")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._fh.write(memoryview(data.numpy()))

    def __exit__(self, kind: object, *exc: object) -> None:
        self._fh.close()
        missing = next(self._order, None)
        if kind is None and missing is not None:
            raise WeLoreError(f"{self.path}: tensor {missing} was announced but never written")
