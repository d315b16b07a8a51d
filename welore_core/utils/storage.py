"""Files on disk: atomic writes (a temp file or folder beside the target, then a rename — readers never see
half of one) and a full disk reported as one line naming the path and the space needed.

A folder writer holds an flock on a lock file beside its temp folder for as long as it lives; the kernel drops
it when the process dies, however it dies (kill -9 included). The next writer of the same folder removes the
temp and set-aside folders whose lock nobody holds, so a killed `compress -o DIR` leaves nothing behind for long.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import WeLoreError

_UMASK = os.umask(0)
os.umask(_UMASK)
STALE_UNLOCKED_S = 3600  # a temp folder with no lock file (a writer older than the locks) is stale after this


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


def headroom(needed: int) -> int:
    """Space kept free beyond a write's own bytes: the filesystem's blocks and metadata, and the journal and
    temp files of whatever else writes there meanwhile (1 MiB + 2 %)."""
    return 2**20 + needed // 50


def no_space(path: Path, needed: int | None = None, written: int | None = None, upfront: bool = False) -> WeLoreError:
    """The one-line error of a write that did not fit: the path, the space it needs (or had written) and the free
    space left. `upfront`: refused before writing, the headroom counted; else the device filled up during the
    write (the free space is measured after the partial output was removed, so it can exceed what was written)."""
    free = _mib(free_bytes(path))
    if upfront and needed:
        want = f"needs about {_mib(needed)} plus {_mib(headroom(needed))} headroom for the filesystem, {free} free"
    elif written:
        want = (f"the device filled up after {_mib(written)}" + (f" of about {_mib(needed)}" if needed else "")
                + f"; {free} free now that the partial output is removed")
    elif needed:
        want = f"the device filled up writing about {_mib(needed)}; {free} free"
    else:
        want = f"{free} free"
    return WeLoreError(f"{path}: no space left on its device ({want}); free some space or write elsewhere")


def check_space(path: Path, needed: int) -> None:
    """Refuse a write of `needed` bytes up front when the device has less free than it and its headroom."""
    if needed + headroom(needed) > free_bytes(path):
        raise no_space(path, needed, upfront=True)


def make_folder(folder: Path, what: str = "folder") -> None:
    """`mkdir -p` with the umask's permissions, or one line naming the folder and what to do."""
    from .files import os_error_message

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WeLoreError(f"{what} {folder}: a file is in the way of the folder; choose another path") from None
    except OSError as err:
        if disk_full(err):
            raise no_space(Path(folder)) from None
        raise WeLoreError(os_error_message(err, what)) from None


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
    refused before anything is written; a full disk during the block is one line naming `folder`. Temp folders
    of earlier writers of `folder` that died are removed first (see the module's note)."""
    folder = Path(folder)
    make_folder(folder.parent)
    remove_stale(folder)
    if needed:
        check_space(folder, needed)
    lock, tmp = _writer_lock(folder)
    try:
        if create:
            tmp.mkdir(mode=0o777)  # the umask decides, as for any folder a user makes
        yield tmp
        _swap_in(tmp, folder)
    except BaseException as err:
        written = _tree_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, WeLoreError) and disk_full(err):
            raise no_space(folder, needed, written) from None
        raise
    finally:
        _release(lock)


def _writer_lock(folder: Path) -> tuple[tuple[int, Path], Path]:
    """A fresh lock file `.NAME.tmp-TAG.lock` beside `folder`, flocked by this writer, and the temp folder path
    `.NAME.tmp-TAG` it guards (the tag is unique: mkstemp makes the lock file exclusively)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{folder.name}.tmp-", suffix=".lock", dir=folder.parent)
    except OSError as err:
        if disk_full(err):
            raise no_space(folder) from None
        raise
    fcntl.flock(fd, fcntl.LOCK_EX)
    lock = Path(name)
    return (fd, lock), lock.with_name(lock.name.removesuffix(".lock"))


def _release(lock: tuple[int, Path]) -> None:
    fd, path = lock
    path.unlink(missing_ok=True)  # unlinked while held: a cleaner never sees it free with our folder still there
    os.close(fd)


def remove_stale(folder: Path) -> list[Path]:
    """Remove the temp (`.NAME.tmp-TAG`) and set-aside (`.NAME.old-TAG-N`) folders beside `folder` whose writer
    is gone: its lock file is free (or, for a writer older than the locks, missing for over an hour)."""
    folder = Path(folder)
    removed: list[Path] = []
    prefix = f".{folder.name}."
    try:
        entries = [p for p in folder.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        rest = entry.name[len(prefix):]
        if rest.startswith("tmp-") and not rest.endswith(".lock"):
            tag = rest[4:]
        elif rest.startswith("old-") and "-" in rest[4:]:
            tag = rest[4:].rsplit("-", 1)[0]
        elif rest.startswith("tmp-") and rest.endswith(".lock") and not entry.with_suffix("").exists():
            tag = rest[4:-5]  # a lock file whose folder is gone: removed below when free
        else:
            continue
        lock = folder.parent / f"{prefix}tmp-{tag}.lock"
        if _take_if_free(lock, entry):
            removed.append(entry)
    return removed


def _take_if_free(lock: Path, entry: Path) -> bool:
    """Remove `entry` (and `lock`) when no live writer holds `lock`."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        try:
            age = time.time() - entry.lstat().st_mtime
        except OSError:
            return False
        if age < STALE_UNLOCKED_S:
            return False
        shutil.rmtree(entry, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a live writer
        os.close(fd)
        return False
    try:
        if entry != lock:
            shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


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


def write_files(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write several files into `folder` (made if missing), each atomically; a file already holding the same
    bytes is left as it is. When one fails (a full disk), the files this call wrote are removed, and the folder
    too when this call made it: a failed report leaves nothing behind."""
    folder = Path(folder)
    made = not folder.exists()
    make_folder(folder, "output")
    written: list[Path] = []
    try:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            path = folder / name
            if _same_bytes(path, data):
                continue
            atomic_write_bytes(path, data)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return [folder / name for name in files]


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False
