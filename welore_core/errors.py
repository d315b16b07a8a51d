"""The project's error type: every user-facing failure names the bad value and where it came from."""
from __future__ import annotations


class WeLoreError(ValueError):
    """A problem with the user's input (a path, a model, a layer, a field) — printed as one line by the CLI."""


class RankMapError(WeLoreError):
    """A rank map that does not fit its schema or the model it is applied to; `problems` lists each one."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        detail = "; ".join(self.problems[:50])
        more = f" (+{len(self.problems) - 50} more)" if len(self.problems) > 50 else ""
        super().__init__(f"{message}: {detail}{more}" if self.problems else message)


class WeLoreWarning(UserWarning):
    """An input that works but is probably not what was meant; the CLI prints it as one `welore: warning:` line."""
