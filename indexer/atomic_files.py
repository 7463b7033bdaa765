"""Crash-safe file writes, shared by every module that owns derived files on disk.

A file is written under a temporary name `.NAME.PID.tmp` beside its final name,
fsynced, renamed into place, and the directory fsynced: a crash leaves the old
file or the new one, never half of one. A write that fails because the disk is
full turns into DiskFull after its temporary file is removed. Temporary files of
killed processes are swept by `remove_stale_temps`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")  # .NAME.PID.tmp, as `temp_path` names them
_FULL = (errno.ENOSPC, errno.EDQUOT)


def temp_path(path: Path) -> Path:
    """The temporary name this process writes `path` under before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_disk_full(e: BaseException) -> bool:
    """True for an OSError that says the disk (or the user's quota) is full."""
    return isinstance(e, OSError) and e.errno in _FULL


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically; raise OSError (ENOSPC included) after removing the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a folder (so a rename in it is durable), or a file written by someone else."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files (and temp folders) that a killed process left in `folder`; return them.

    A temp file whose writer is still running is kept: it may be about to be renamed.
    """
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if m is None or is_running(int(m.group(1))):
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True
