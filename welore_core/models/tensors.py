"""Reading safetensors checkpoints without loading them: headers (names, shapes, dtypes), parameter counts,
stored dtypes, and tensors streamed one at a time so memory is bounded by the largest tensor."""
from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..errors import WeLoreError

TensorIndex = dict[str, tuple[Path, tuple[int, ...], str]]  # name -> (file, shape, safetensors dtype)
TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets), without reading data."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as err:
        raise WeLoreError(f"{path}: not a readable safetensors file ({err})") from None
    if not isinstance(header, dict):
        raise WeLoreError(f"{path}: not a readable safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    return header


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
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[str]] = defaultdict(list)
    for name in names:
        if name not in index:
            raise WeLoreError(f"{where}: tensor {name} is in no weight file")
        by_file[index[name][0]].append(name)
    for file, group in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as fh:
                for name in group:
                    yield name, fh.get_tensor(name)
        except (OSError, RuntimeError, SafetensorError) as err:  # a damaged or truncated shard
            raise WeLoreError(f"{file}: cannot read weights ({err})") from None
