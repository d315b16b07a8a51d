"""The run folder of the gradient-dynamics lab: the one place that knows its files.

    run.json            settings, layers, status, recorded steps (rewritten atomically as the run goes)
    records/step-NNNNNNN.npz   what was recorded at each checkpoint (`record`)
    probe.npy           the fixed probe batch
    losses.csv          training loss and learning rate of every step
    checkpoint.pt       the latest resumable state (model, optimiser, schedule, step)
    model/              once finished: the trained model as a HF folder (`welore spectra` reads it)
    summary.csv         once finished: the per-layer emergence summary
    figures/            `welore dynamics --html`: the figures as HTML
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_bytes, read_json

KIND = "welore.dynamics/v1"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def of(cls, folder: str | Path) -> "RunFolder":
        return cls(Path(folder).expanduser())

    @property
    def run_file(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def records(self) -> Path:
        return self.path / "records"

    @property
    def probe(self) -> Path:
        return self.path / "probe.npy"

    @property
    def losses(self) -> Path:
        return self.path / "losses.csv"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def summary(self) -> Path:
        return self.path / "summary.csv"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def is_run(self) -> bool:
        """The folder holds a dynamics run (finished or not)."""
        return self.run_file.is_file()

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = read_json(self.run_file, "run file")
        return meta

    def record_path(self, step: int) -> Path:
        return self.records / f"step-{step:07d}.npz"

    def record_steps(self) -> list[int]:
        """Steps that have a record, ascending."""
        return sorted(int(p.stem.split("-")[1]) for p in self.records.glob("step-*.npz"))

    def save_record(self, step: int, arrays: dict[str, np.ndarray]) -> Path:
        """Write one checkpoint's record atomically (readers never see half a file)."""
        buffer = io.BytesIO()
        np.savez(buffer, step=np.asarray(step), **arrays)
        path = self.record_path(step)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def save_probe(self, probe: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, probe)
        atomic_write_bytes(self.probe, buffer.getvalue())

    def stamp(self) -> tuple[float, int]:
        """Changes whenever the run writes a checkpoint: a cache key for everything read from the folder."""
        return (self.run_file.stat().st_mtime if self.run_file.is_file() else 0.0, len(self.record_steps()))
