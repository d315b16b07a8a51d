"""The run registry: every evaluation in one SQLite database under cache/, shared by CLI and dashboard.

A run is identified by what determines its result — model fingerprint, plan hash, compression mode,
data set and its text hash, token budget, seqlen — so an identical request is answered from the
registry instead of being recomputed. WAL mode and a busy timeout let several processes write at once.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import pandas as pd

from ..errors import WeLoreError
from ..utils import VERSION, cache_dir, disk_full, free_bytes, make_folder
from .attribution import ATTRIBUTION, backfill_fields

# zero-shot rows (kind "zeroshot", one per harness task): accuracy beside the perplexity rows
ZEROSHOT = {"task": "TEXT", "num_fewshot": "INTEGER", "limit_n": "INTEGER", "acc": "REAL", "acc_stderr": "REAL",
            "acc_norm": "REAL", "acc_norm_stderr": "REAL", "examples": "INTEGER", "harness": "TEXT"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT, fingerprint TEXT, plan_hash TEXT, strategy TEXT, err REAL, k REAL, mode TEXT,
    params INTEGER, ppl REAL, nll REAL, dataset TEXT, data_hash TEXT, tokens INTEGER, token_budget INTEGER,
    seqlen INTEGER, seconds REAL, tokens_per_s REAL, version TEXT, result TEXT,
    """ + ", ".join(f"{name} {kind}" for name, kind in {**ATTRIBUTION, **ZEROSHOT}.items()) + """
)"""
COLUMNS = ("kind", "model", "fingerprint", "plan_hash", "strategy", "err", "k", "mode", "params", "ppl", "nll",
           "dataset", "data_hash", "tokens", "token_budget", "seqlen", "seconds", "tokens_per_s", "version",
           *ATTRIBUTION, *ZEROSHOT)


def connect(path: Path, schema: str, migrate: Callable[[sqlite3.Connection], None] | None = None) -> sqlite3.Connection:
    """The registry database (WAL + busy timeout: safe across threads and processes), with `schema` applied and
    an older layout brought up to date by `migrate`."""
    make_folder(path.parent, "run registry folder")
    with database_errors(path):
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(schema)
            if migrate is not None:
                migrate(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def migrate_runs(conn: sqlite3.Connection) -> None:
    """Add the columns a registry written before them lacks (attribution, zero-shot) and backfill the attribution
    of its rows (`backfill_fields`): every row is kept. One process migrates; the others wait on the write lock
    and find it done."""
    extra = {**ATTRIBUTION, **ZEROSHOT}

    def missing() -> list[str]:
        have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        return [name for name in extra if name not in have]

    if not missing():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        added = missing()
        for name in added:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {extra[name]}")
        rows = conn.execute("SELECT id, model, fingerprint, mode FROM runs").fetchall() if set(added) & set(
            ATTRIBUTION) else []
        for run_id, model, fingerprint, mode in rows:
            fields = backfill_fields({"model": model, "fingerprint": fingerprint, "mode": mode})
            if fields:
                conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                             (*fields.values(), run_id))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


@contextmanager
def opened(path: Path, schema: str, migrate: Callable[[sqlite3.Connection], None] | None = None
           ) -> Iterator[sqlite3.Connection]:
    """A connection in a transaction (committed when the block succeeds), closed afterwards; errors as one line."""
    conn = connect(path, schema, migrate)
    try:
        with database_errors(path), conn:
            yield conn
    finally:
        conn.close()


@contextmanager
def database_errors(path: Path) -> Iterator[None]:
    """SQLite's errors inside the block as one line naming the database and what to do. On a full disk SQLite
    often says only "disk I/O error" (it could not grow the WAL's shared-memory file): with under 1 MiB free that
    is read as a full disk."""
    try:
        yield
    except sqlite3.Error as err:
        text, free = str(err), free_bytes(path)
        if disk_full(err) or ("disk i/o error" in text.lower() and free < 2**20):
            raise WeLoreError(f"run registry {path}: no space left on its device (SQLite: {text!r}, "
                              f"{free / 2**20:,.1f} MiB free); free some space, or set WELORE_CACHE to a folder on "
                              "another disk") from None
        raise WeLoreError(f"run registry {path}: {text}; if the file is damaged, move it aside and run again "
                          "(a new registry starts empty)") from None


def run_key(**identity: Any) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Registry:
    path: Path

    @classmethod
    def default(cls) -> "Registry":
        return cls(cache_dir() / "registry.sqlite")

    def _connect(self) -> ContextManager[sqlite3.Connection]:
        return opened(self.path, SCHEMA, migrate_runs)

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored result of an identical run, or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, key: str, fields: dict[str, Any], result: dict[str, Any]) -> None:
        """Store a run (an identical earlier one is kept: results are deterministic given the key)."""
        bad = sorted({k for k, v in {**fields, **result}.items() if isinstance(v, float) and not math.isfinite(v)})
        if bad:  # an identical request would get the bad value back from the registry forever
            raise WeLoreError(f"{self.path}: not recording a run whose {', '.join(bad)} is not finite")
        values = {c: fields.get(c) for c in COLUMNS}
        values["version"] = values["version"] or VERSION
        with self._connect() as conn:
            conn.execute(f"INSERT OR IGNORE INTO runs (key, created, {', '.join(COLUMNS)}, result) "
                         f"VALUES (?, ?, {', '.join('?' for _ in COLUMNS)}, ?)",
                         (key, time.strftime("%Y-%m-%dT%H:%M:%S"), *values.values(), json.dumps(result, default=str)))

    def results(self, kind: str, limit: int = 200) -> list[dict[str, Any]]:
        """The full result JSON of the newest runs of one kind, each with its row id and creation time."""
        with self._connect() as conn:
            rows = conn.execute("SELECT id, created, result FROM runs WHERE kind = ? ORDER BY id DESC LIMIT ?",
                                (kind, limit)).fetchall()
        return [{**json.loads(result), "id": run_id, "created": created} for run_id, created, result in rows]

    def frame(self, kind: str | None = None) -> pd.DataFrame:
        """All runs (newest first) as a DataFrame, optionally of one kind."""
        with self._connect() as conn:
            query = "SELECT id, created, " + ", ".join(COLUMNS) + " FROM runs"
            args: tuple[Any, ...] = ()
            if kind:
                query += " WHERE kind = ?"
                args = (kind,)
            return pd.read_sql_query(query + " ORDER BY id DESC", conn, params=args)
