"""Background jobs: long work runs in a thread, its state lives in the registry database.

A job row (id, kind, params, status, progress, result, error, owner, pid) is the only shared state, so
a page reload, a second browser tab or another process can follow a job by id, and cancellation is a
flag the job's own progress callback checks. Status: queued → running → done | failed | cancelled;
a running job whose process is gone reads as "interrupted".
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from ..errors import WeLoreError
from ..utils import Progress, cache_dir
from ..utils.devices import DEFAULT_THREADS
from .registry import opened

JobFn = Callable[[Progress], dict[str, Any]]
FINAL = ("done", "failed", "cancelled", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT, params TEXT, status TEXT NOT NULL,
    done INTEGER DEFAULT 0, total INTEGER DEFAULT 0, message TEXT DEFAULT '', result TEXT, error TEXT,
    cancel INTEGER DEFAULT 0, pid INTEGER, created REAL, updated REAL
)"""


class JobCancelled(Exception):
    """Raised inside a job by its progress callback once cancellation was requested."""


@dataclass
class JobState:
    id: str
    kind: str
    owner: str
    params: dict[str, Any]
    status: str
    done: int
    total: int
    message: str
    result: dict[str, Any] | None
    error: str | None
    created: float
    updated: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINAL


class JobStore:
    """Job rows in `cache/registry.sqlite` (WAL, busy timeout: safe across threads and processes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "registry.sqlite"

    def _connect(self) -> ContextManager[sqlite3.Connection]:
        return opened(self.path, SCHEMA)

    def create(self, kind: str, params: dict[str, Any], owner: str = "") -> str:
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self._connect() as conn:
            conn.execute("INSERT INTO jobs (id, kind, owner, params, status, pid, created, updated) "
                         "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                         (job_id, kind, owner, json.dumps(params, default=str), os.getpid(), now, now))
        return job_id

    def _set(self, job_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        with self._connect() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                         (*fields.values(), job_id))

    def progress(self, job_id: str, done: int, total: int, message: str) -> None:
        self._set(job_id, status="running", done=done, total=total, message=message)

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        self._set(job_id, status="done", result=json.dumps(result, default=str))

    def fail(self, job_id: str, error: str, status: str = "failed") -> None:
        self._set(job_id, status=status, error=error)

    def request_cancel(self, job_id: str) -> None:
        self._set(job_id, cancel=1)

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def get(self, job_id: str) -> JobState:
        with self._connect() as conn:
            row = conn.execute("SELECT id, kind, owner, params, status, done, total, message, result, error, created, "
                               "updated, pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise WeLoreError(f"no job {job_id!r} in {self.path}")
        return _state(row)

    def list(self, owner: str | None = None, limit: int = 50) -> list[JobState]:
        query = ("SELECT id, kind, owner, params, status, done, total, message, result, error, created, updated, pid "
                 "FROM jobs")
        args: tuple[Any, ...] = ()
        if owner is not None:
            query, args = query + " WHERE owner = ?", (owner,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY created DESC LIMIT ?", (*args, limit)).fetchall()
        return [_state(r) for r in rows]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state(row: tuple[Any, ...]) -> JobState:
    (job_id, kind, owner, params, status, done, total, message, result, error, created, updated, pid) = row
    if status in ("queued", "running") and not _alive(pid):
        status, error = "interrupted", error or f"the process running it (pid {pid}) is gone"
    return JobState(job_id, kind, owner or "", json.loads(params or "{}"), status, done or 0, total or 0,
                    message or "", json.loads(result) if result else None, error, created or 0.0, updated or 0.0)


def start_job(kind: str, params: dict[str, Any], fn: JobFn, store: JobStore | None = None, owner: str = "") -> str:
    """Run `fn(progress)` in a daemon thread; returns the job id at once. `fn`'s result dict is stored."""
    store = store or JobStore()
    job_id = store.create(kind, params, owner)

    def progress(done: int, total: int, message: str) -> None:
        if store.cancel_requested(job_id):
            raise JobCancelled(message)
        store.progress(job_id, done, total, message)

    def run() -> None:
        torch.set_num_threads(DEFAULT_THREADS)  # not whatever another thread's pool left as the default
        try:
            progress(0, 0, "starting")
            store.finish(job_id, fn(progress))
        except JobCancelled:
            store.fail(job_id, "cancelled by the user", status="cancelled")
        except WeLoreError as err:
            store.fail(job_id, str(err))
        except Exception as err:  # a job must always end in a final state the UI can show
            store.fail(job_id, f"{type(err).__name__}: {err}")

    threading.Thread(target=run, name=f"welore-job-{job_id}", daemon=True).start()
    return job_id


def wait(job_id: str, store: JobStore | None = None, timeout: float = 600.0, poll: float = 0.05) -> JobState:
    """Block until a job reaches a final state (for scripts and tests)."""
    store = store or JobStore()
    deadline = time.monotonic() + timeout
    while True:
        state = store.get(job_id)
        if state.finished or time.monotonic() > deadline:
            return state
        time.sleep(poll)
