"""The harness's request cache and progress while one zero-shot task runs: answered requests kept on disk so a
killed or cancelled task resumes, and a progress report (where a cancel is raised) between forward passes."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from ..utils import Progress
from .registry import Registry


def request_cache(registry: Registry, key: str) -> Path:
    """Where the harness keeps the answers to one task's requests while the task runs (its `use_cache`, a sqlite
    file per rank beside the registry): a run that is killed or cancelled resumes from the requests already
    scored instead of from the start. The file belongs to one registry key (the request texts do not say which
    model answered them) and is removed once the task's result is in the registry."""
    return registry.path.parent / "harness-requests" / key


def remove_request_cache(path: Path) -> None:
    """Delete a task's request cache (the harness writes one sqlite file per rank, `<key>_rank<i>.db`) once its
    result is in the registry."""
    for db in path.parent.glob(f"{path.name}_rank*"):
        db.unlink(missing_ok=True)


def close_request_cache(lm: Any) -> None:
    """Close the request cache `simple_evaluate(use_cache=...)` hooked onto `lm` (its sqlite file, written by a
    thread of its own) and unhook it, so the next task starts with its own file."""
    from lm_eval.api.model import CacheHook

    db = getattr(getattr(lm, "cache_hook", None), "dbdict", None)
    if db is not None:
        db.close()
    lm.set_cache_hook(CacheHook(None))


BATCH_REPORT_S = 1.0  # least time between two progress reports from inside a task


@contextmanager
def reporting_batches(model: nn.Module, progress: Progress | None, done: int, total: int, task: str) -> Iterator[None]:
    """Report progress before the model's forward passes while the harness runs `task` (at most once a
    `BATCH_REPORT_S`): the dashboard's bar moves inside a long task, and a cancel (raised from the callback)
    stops it within one batch; the requests answered so far stay in the harness's request cache."""
    if progress is None:
        yield
        return
    state = {"batches": 0, "last": time.monotonic()}

    def report(*_: Any) -> None:
        state["batches"] += 1
        now = time.monotonic()
        if now - state["last"] >= BATCH_REPORT_S:
            state["last"] = now
            progress(done, total, f"harness: {task} (batch {state['batches']})")

    handle = model.register_forward_pre_hook(report)
    try:
        yield
    finally:
        handle.remove()
