"""Spectra cache: reuse, atomic writes, corruption detection, resume, stale models, concurrent writers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from welore_core import compute_spectra
from welore_core.compression.spectra import compute as spectra_mod
from welore_core.compression.spectra.cache import SpectraCache
from welore_core.utils import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent


def _records(cache: Path) -> list[Path]:
    return sorted(cache.glob("spectra/*/*/*.sv"))


def test_second_call_reads_every_layer_from_cache(llama_dir: Path, isolated_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = compute_spectra(llama_dir)
    assert first.from_cache == 0 and len(_records(isolated_cache)) == 21

    def no_svd(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache hit expected, SVD was called")

    monkeypatch.setattr(spectra_mod, "singular_values", no_svd)
    second = compute_spectra(llama_dir)
    assert second.from_cache == 21 and second.fingerprint == first.fingerprint
    for name, values in first.values.items():
        np.testing.assert_array_equal(second.values[name], values)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other_layer"])
def test_corrupted_record_is_reported_and_recomputed(llama_dir: Path, isolated_cache: Path, damage: str) -> None:
    first = compute_spectra(llama_dir)
    records = _records(isolated_cache)
    victim = records[3]
    blob = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(blob[: len(blob) - 7])
    elif damage == "flip":
        victim.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    elif damage == "garbage":
        victim.write_bytes(b"not a record")
    else:
        victim.write_bytes(records[4].read_bytes())
    again = compute_spectra(llama_dir)
    assert again.from_cache == 20
    assert len(again.notes) == 1 and str(victim) in again.notes[0] and "corrupted" in again.notes[0]
    for name, values in first.values.items():
        np.testing.assert_array_equal(again.values[name], values)
    assert compute_spectra(llama_dir).notes == []  # repaired on disk


def test_interrupted_run_resumes_with_finished_layers(llama_dir: Path, isolated_cache: Path) -> None:
    def stop_after_five(done: int, total: int, name: str) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_spectra(llama_dir, progress=stop_after_five)
    assert len(_records(isolated_cache)) == 5
    seen: list[int] = []
    resumed = compute_spectra(llama_dir, progress=lambda d, t, n: seen.append(d))
    assert resumed.from_cache == 5 and seen == list(range(6, 22))


def test_changed_weights_never_reuse_stale_spectra(tmp_path: Path) -> None:
    model = tiny_llama()
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    before = compute_spectra(folder)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(2.0)
    model.save_pretrained(folder)
    after = compute_spectra(folder)
    assert after.fingerprint != before.fingerprint and after.from_cache == 0
    np.testing.assert_allclose(after.values["model.layers.0.self_attn.q_proj"],
                               2 * before.values["model.layers.0.self_attn.q_proj"], rtol=1e-5)
    # the in-memory path keys on tensor bytes the same way
    assert compute_spectra(model).fingerprint != compute_spectra(tiny_llama()).fingerprint


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "record.sv"
    atomic_write_bytes(target, b"old contents")

    def crash(*args: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["record.sv"]  # no temp file left behind


def test_stale_meta_is_ignored(llama_dir: Path, isolated_cache: Path) -> None:
    first = compute_spectra(llama_dir)
    meta = next(isolated_cache.glob("spectra/*/meta.json"))
    meta.write_text("{ broken")
    again = compute_spectra(llama_dir)
    assert [l.name for l in again.layers] == [l.name for l in first.layers] and again.from_cache == 21
    assert json.loads(meta.read_text())["fingerprint"] == first.fingerprint


@pytest.mark.slow  # a fresh Python process
def test_two_processes_computing_the_same_model_do_not_corrupt_each_other(llama_dir: Path, isolated_cache: Path) -> None:
    env = {**os.environ, "WELORE_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "welore_core", "spectra", str(llama_dir), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert results[0]["fingerprint"] == results[1]["fingerprint"]
    assert sorted(r["from_cache"] for r in results) in ([0, 21], [0, 0])  # the lock makes the second one read
    cache = SpectraCache(isolated_cache, results[0]["fingerprint"], results[0]["setting"])
    values, notes = cache.load({row["name"]: row["full_rank"] for row in results[0]["per_layer"]})
    assert len(values) == 21 and notes == []
    assert compute_spectra(llama_dir).from_cache == 21


def test_rewritten_file_with_restored_mtime_is_rehashed(tmp_path: Path) -> None:
    model = tiny_llama()
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    weights = folder / "model.safetensors"
    before = compute_spectra(folder)
    stat = weights.stat()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(2.0)
    model.save_pretrained(folder)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert compute_spectra(folder).fingerprint != before.fingerprint


def test_cache_files_are_readable_by_others(llama_dir: Path, isolated_cache: Path) -> None:
    compute_spectra(llama_dir)
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in _records(isolated_cache))


def test_atomic_folder_replaces_whole_or_leaves_the_old_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from welore_core.utils import atomic_folder

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    try:
        with atomic_folder(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "old.txt").read_text() == "old"
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
