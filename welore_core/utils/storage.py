"""Files on disk: atomic writes (a temp file or folder beside the target, then a rename — readers never see
half of one), a full disk reported as one line naming the path and the space needed, and JSON reads that
fail with one line naming the file."""
from __future__ import annotations

import errno
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


def disk_full(err: BaseException) -> bool:
    """Does `err` mean the filesystem ran out of space or quota? An OSError (ENOSPC, EDQUOT), or a library's
    own error wrapping one (safetensors' SafetensorError, sqlite's "database or disk is full")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return any(s in text for s in ("no space left on device", "disk is full", "disk quota exceeded"))


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def free_bytes(path: Path) -> int:
    """Free space on the filesystem `path` is (or would be) on."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def no_space(path: Path, needed: int | None = None, written: int | None = None) -> WeLoreError:
    """The one-line error of a write that did not fit: the path, the space it needs (or had written) and the free
    space left."""
    want = f"needs about {_mib(needed)}" if needed else f"stopped after {_mib(written)}" if written else "needs more"
    return WeLoreError(f"{path}: no space left on its device ({want}, {_mib(free_bytes(path))} free); "
                       "free some space or write elsewhere")


def check_space(path: Path, needed: int) -> None:
    """Refuse a write of `needed` bytes up front when the device has less free (nothing is written)."""
    if needed > free_bytes(path):
        raise no_space(path, needed)


@contextmanager
def disk_writes(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into `no_space(path, needed)`; any other error passes unchanged."""
    try:
        yield
    except WeLoreError:
        raise
    except Exception as err:
        if disk_full(err):
            raise no_space(path, needed) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that any reader sees either the old file or the whole new one."""
    with disk_writes(path, len(data)):
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
def atomic_folder(folder: Path, create: bool = True, needed: int | None = None) -> Iterator[Path]:
    """Yield a temp folder path beside `folder` (an empty folder, or with `create=False` a path for a writer
    that makes the folder itself); when the block succeeds it replaces `folder` whole, and on any error (or
    Ctrl-C) it is removed, leaving `folder` as it was. With `needed` (bytes), a device with less free space is
    refused before anything is written; a full disk during the block is one line naming `folder`."""
    folder = Path(folder)
    if needed:
        check_space(folder, needed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))  # unique per writer (threads)
    if not create:
        tmp.rmdir()  # the writer makes it; the name stays this writer's own
    try:
        yield tmp
        _swap_in(tmp, folder)
    except BaseException as err:
        written = _tree_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, WeLoreError) and disk_full(err):
            raise no_space(folder, needed, written) from None
        raise


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put `tmp` at `folder`: the folder there is set aside first, so it is never half-deleted under a reader.
    A concurrent writer may land its own folder between the set-aside and the swap; that one is set aside too
    and the swap retried, so the last writer's folder ends up there whole."""
    aside: list[Path] = []
    while True:
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{tmp.name.rsplit('-', 1)[-1]}-{len(aside)}"
            try:
                os.replace(folder, old)
                aside.append(old)
            except FileNotFoundError:  # another writer set it aside first
                pass
        try:
            os.replace(tmp, folder)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    for old in aside:
        shutil.rmtree(old, ignore_errors=True)


def _tree_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return 0


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
