"""Reading what users point at, and checking where they ask us to write, before any work is done.

Reads: only regular files, and never more than a cap (a symlink to /dev/zero or a FIFO would otherwise be read
forever). Writes: an output must not be the source model or lie inside it (through symlinks too), must not be
the wrong kind of thing (a folder where a file goes), and its nearest existing folder must really take a new
entry (a probe folder made and removed at once: /proc, a read-only mount or a missing permission are named
before seconds of work, not after). OS errors become one line naming the path and what to do.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..errors import WeLoreError

JSON_CAP = 64 * 2**20  # configs, manifests, indexes and run records are kilobytes; anything this large is not one


def regular_file(path: Path, what: str = "file") -> os.stat_result:
    """`path`'s stat (following symlinks) when it is a regular file; a device, FIFO, socket or folder is refused
    (reading a device such as /dev/zero never ends)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WeLoreError(f"{path}: no such {what}") from None
    except OSError as err:
        raise WeLoreError(f"{path}: unreadable {what} ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise WeLoreError(f"{path}: is {kind}, not a {what} file")
    return st


def read_capped(path: Path, cap: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `cap` bytes; larger (or growing) files are refused unread."""
    size = regular_file(path, what).st_size
    if size > cap:
        raise WeLoreError(f"{path}: {size:,} bytes is too large for a {what} (at most {cap:,})")
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)  # never more than the cap, whatever the file does meanwhile
    except OSError as err:
        raise WeLoreError(f"{path}: unreadable {what} ({err.strerror or err})") from None
    if len(data) > cap:
        raise WeLoreError(f"{path}: more than {cap:,} bytes is too large for a {what}")
    return data


def read_json(path: Path, what: str = "file", kind: type | None = dict, cap: int = JSON_CAP) -> Any:
    """The JSON value in `path`; a missing, unreadable, oversized or malformed file (or, with `kind`, a value of
    another type) raises WeLoreError naming the file and `what` it should have been."""
    data = read_capped(Path(path), cap, what)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise WeLoreError(f"{path}: unreadable {what} ({err})") from None
    except (ValueError, RecursionError) as err:
        raise WeLoreError(f"{path}: {what} is not valid JSON ({err})") from None
    if kind is not None and not isinstance(value, kind):
        raise WeLoreError(f"{path}: {what} must be a JSON {'object' if kind is dict else kind.__name__}, "
                          f"got {type(value).__name__}")
    return value


def within(path: Path, folder: Path) -> bool:
    """Is `path` `folder` itself or inside it (both with symlinks resolved)?"""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_output(path: str | os.PathLike[str], folder: bool, protected: Iterable[Path] = (),
                 what: str = "output") -> Path:
    """Refuse an output path before any work: at or inside a `protected` path (the source model's folder or
    files, through symlinks), the wrong kind of entry (a folder where a file goes, a
    file or device where a folder goes), or a place nothing can be created in. Nothing is left behind."""
    path = Path(path).expanduser()
    for guarded in protected:
        if within(path, guarded):
            raise WeLoreError(f"{what} {path} is {'' if path.resolve() == guarded.resolve() else 'inside '}the source "
                              f"model ({guarded}); nothing is written into a source model: choose a path outside it")
    if path.exists() or path.is_symlink():
        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            raise WeLoreError(os_error_message(err, what)) from None
        if folder and not stat.S_ISDIR(mode):
            raise WeLoreError(f"{what} {path} exists and is not a folder; choose a folder path")
        if not folder and not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise WeLoreError(f"{what} {path} is {kind}; choose a file path")
    probe_writable(path.parent if not folder or not path.exists() else path, what, path)
    return path


def probe_writable(folder: Path, what: str, target: Path) -> None:
    """Can an entry be made under `folder` (or its nearest existing ancestor)? Checked by making a probe folder
    and removing it: permissions, read-only mounts and pseudo-filesystems all answer the same way."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WeLoreError(f"{what} {target}: {existing} is a file, not a folder; choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".welore-probe-", dir=existing))
    except OSError as err:
        raise WeLoreError(f"{what} {target}: cannot create anything in {existing} ({err.strerror or err}); "
                          "choose a folder you can write") from None


_HINTS = {
    errno.EACCES: "permission denied: choose a path you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a path you can write, or fix its permissions",
    errno.EEXIST: "already exists: choose a new path, or remove it first",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "is a folder where a file is needed: choose a file path",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ENOSPC: "no space left on its device: free some space or write elsewhere",
}


def os_error_message(err: OSError, what: str = "") -> str:
    """One line for an OSError that reached the user: the path(s) it concerns and what to do about it."""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    reason = _HINTS.get(err.errno or -1, err.strerror or str(err))
    where = " ".join(s for s in (what, paths) if s)
    return f"{where}: {reason}" if where else f"{type(err).__name__}: {reason}"
