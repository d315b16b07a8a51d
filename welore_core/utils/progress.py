"""The progress callback every long core function takes: `progress(done, total, message)`.

The CLI adapts it to a tqdm bar, the dashboard to `st.progress`, background jobs to a row in the registry
(where raising from it is how a job is cancelled).
"""
from __future__ import annotations

from typing import Callable

Progress = Callable[[int, int, str], None]


def silent(done: int, total: int, message: str) -> None:
    """A progress callback that reports nothing."""


def at_step(say: Progress, step: int, steps: int, what: str) -> Progress:
    """Progress of a sub-task (an evaluation) reported at `step` of `steps`, so the outer total stays the same."""
    return lambda i, n, message: say(step, steps, f"{what} {i}/{n}")
