"""Files on disk: atomic writes (a temp file or folder beside the target, then a rename — readers never see
half of one) and JSON reads that fail with one line naming the file."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import WeLoreError


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that any reader sees either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared cache must be readable
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_folder(folder: Path, create: bool = True) -> Iterator[Path]:
    """Yield a temp folder path beside `folder` (an empty folder, or with `create=False` a path for a writer
    that makes the folder itself); when the block succeeds it replaces `folder` whole, and on any error (or
    Ctrl-C) it is removed, leaving `folder` as it was."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if create:
        tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path, what: str = "file", kind: type | None = dict) -> Any:
    """The JSON value in `path`; a missing, unreadable or malformed file (or, with `kind`, a value of another
    type) raises WeLoreError naming the file and `what` it should have been."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeLoreError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise WeLoreError(f"{path}: unreadable {what} ({err})") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise WeLoreError(f"{path}: {what} is not valid JSON ({err})") from None
    if kind is not None and not isinstance(value, kind):
        raise WeLoreError(f"{path}: {what} must be a JSON {'object' if kind is dict else kind.__name__}, "
                          f"got {type(value).__name__}")
    return value
