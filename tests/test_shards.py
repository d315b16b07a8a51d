"""Safetensors shards read and written a tensor at a time (models.tensors.ShardReader / ShardWriter): the bytes
match safetensors' own reader and writer, and a damaged file or a wrong tensor is one line naming it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from welore_core.errors import WeLoreError
from welore_core.models import ShardReader, ShardWriter, read_header

TENSORS = {
    "w.bf16": torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
    "w.f32": torch.randn(3, 1, 4, generator=torch.Generator().manual_seed(1)),
    "w.f16": torch.randn(9, generator=torch.Generator().manual_seed(2)).half(),
    "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    "mask": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 4),
}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    entries = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    with ShardWriter(path, entries, {"format": "pt"}) as writer:
        for name, t in tensors.items():
            writer.write(name, t)


def test_a_written_shard_loads_in_safetensors_and_reads_back(tmp_path: Path) -> None:
    _write(tmp_path / "s.safetensors", TENSORS)
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as fh:
        assert set(fh.keys()) == set(TENSORS) and fh.metadata() == {"format": "pt"}
        for name, t in TENSORS.items():
            assert fh.get_tensor(name).dtype == t.dtype and torch.equal(fh.get_tensor(name), t), name
    with ShardReader(tmp_path / "s.safetensors") as reader:
        for name, t in TENSORS.items():
            got = reader.get(name)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), name
    assert int.from_bytes((tmp_path / "s.safetensors").read_bytes()[:8], "little") % 8 == 0  # data 8-aligned


def test_the_reader_reads_what_safetensors_wrote(tmp_path: Path) -> None:
    save_file({k: v.contiguous() for k, v in TENSORS.items()}, str(tmp_path / "s.safetensors"))
    with ShardReader(tmp_path / "s.safetensors") as reader:
        for name, t in TENSORS.items():
            assert torch.equal(reader.get(name), t), name
        with pytest.raises(WeLoreError, match=r"s\.safetensors: no tensor nope"):
            reader.get("nope")


def test_a_truncated_shard_names_the_file_and_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    save_file({"a": torch.ones(4), "b": torch.ones(1000)}, str(path))
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])  # the header promises bytes the file no longer has: refused before any read
    with pytest.raises(WeLoreError, match=r"s\.safetensors: not a readable safetensors file \(tensor b: claims bytes "
                                          r"up to 4,016 but the file holds 3,916 bytes of tensor data\)"):
        ShardReader(path)
    path.write_bytes(whole)
    with ShardReader(path) as reader:  # cut after the header was read (a copy still in progress)
        path.write_bytes(whole[:-100])
        assert torch.equal(reader.get("a"), torch.ones(4))
        with pytest.raises(WeLoreError, match=r"s\.safetensors: cannot read weights \(tensor b: the file ends 100 bytes early\)"):
            reader.get("b")


def test_the_writer_takes_only_the_announced_tensors_in_order(tmp_path: Path) -> None:
    entries = {"a": (torch.float32, (2,)), "b": (torch.bfloat16, (3,))}
    with pytest.raises(WeLoreError, match=r"tensor b .* is not the next announced one \(a: "):
        with ShardWriter(tmp_path / "x.safetensors", entries) as writer:
            writer.write("b", torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(WeLoreError, match=r"tensor a \(torch.float32, \(3,\)\) is not the next announced"):
        with ShardWriter(tmp_path / "x.safetensors", entries) as writer:
            writer.write("a", torch.zeros(3))
    with pytest.raises(WeLoreError, match="tensor b was announced but never written"):
        with ShardWriter(tmp_path / "x.safetensors", entries) as writer:
            writer.write("a", torch.zeros(2))
    with ShardWriter(tmp_path / "x.safetensors", entries) as writer:
        writer.write("a", torch.zeros(2))
        writer.write("b", torch.ones(3, dtype=torch.bfloat16))
    assert read_header(tmp_path / "x.safetensors")["b"]["dtype"] == "BF16"
