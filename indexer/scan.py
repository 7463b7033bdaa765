"""Walk photo folders and fingerprint files cheaply.

Paths are bytes throughout, so names that are not valid UTF-8 round-trip.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Sequence

from indexer.decode import path_str

IMAGE_EXTENSIONS = frozenset(
    b".jpg .jpeg .jpe .jfif .png .webp .gif .tif .tiff .bmp .heic .heif .avif .mpo".split()
)
HASH_BLOCK = 64 * 1024


@dataclass(frozen=True)
class FileStat:
    path: bytes
    size: int
    mtime_ns: int
    reason: str | None = None  # set when the entry has an image name but cannot be one: skipped, never opened


@dataclass
class Scan:
    """What one walk found: image files, and places it could not read."""

    files: dict[bytes, FileStat] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_roots(roots: Sequence[bytes], exclude: Sequence[str] = ()) -> Scan:
    """Walk each root (a folder or a single file); roots must exist."""
    result = Scan()
    visited: set[tuple[int, int]] = set()
    for root in roots:
        st = _stat(root, result)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(root, exclude, visited, result)
        elif stat.S_ISREG(st.st_mode) and is_image_name(root):
            result.files[root] = FileStat(root, st.st_size, st.st_mtime_ns)
    return result


def _walk(top: bytes, exclude: Sequence[str], visited: set[tuple[int, int]], result: Scan) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        st = _stat(folder, result)
        if st is None or (st.st_dev, st.st_ino) in visited:
            continue  # a symlink back into a folder already walked: the loop ends here
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            result.problems.append((path_str(folder), f"cannot list folder: {e.strerror or e}"))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(b".") or _excluded(entry.path, exclude):
                continue
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as e:  # a symlink loop, a dangling link, a vanished file
                why = f"cannot stat: {e.strerror or e}"
                if is_image_name(name):
                    _skip(entry.path, why, result)
                else:
                    result.problems.append((path_str(entry.path), why))
                continue
            if stat.S_ISDIR(est.st_mode):
                stack.append(entry.path)
            elif is_image_name(name):
                if stat.S_ISREG(est.st_mode):
                    result.files[entry.path] = FileStat(entry.path, est.st_size, est.st_mtime_ns)
                else:  # FIFOs, sockets and devices are never opened: reading one could block forever
                    _skip(entry.path, f"not a regular file ({_kind(est.st_mode)})", result)


def _skip(path: bytes, reason: str, result: Scan) -> None:
    """Account for an image-named entry that cannot be read as a file (recorded as skipped)."""
    try:
        st = os.lstat(path)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime_ns = 0, 0
    result.files[path] = FileStat(path, size, mtime_ns, reason)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _stat(path: bytes, result: Scan) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError as e:
        result.problems.append((path_str(path), f"cannot stat: {e.strerror or e}"))
        return None


def _excluded(path: bytes, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    text = path_str(path)
    name = text.rsplit("/", 1)[-1]
    return any(fnmatchcase(text, p) or fnmatchcase(name, p) for p in patterns)


def is_under(path: bytes, root: bytes) -> bool:
    """Whether `path` is `root` or inside it (by path components, so /a/bc is not under /a/b)."""
    base = root.rstrip(b"/")
    return path == base or path.startswith(base + b"/")


def is_image_name(path: bytes) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def content_hash(path: bytes, size: int) -> str | None:
    """Size plus digests of the first and last 64 KiB: moving 50k photos costs seconds.

    None when the file cannot be read.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    try:
        # O_NONBLOCK: a file replaced by a FIFO since the walk must not hang the run.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            h.update(f.read(HASH_BLOCK))
            if size > 2 * HASH_BLOCK:
                f.seek(-HASH_BLOCK, os.SEEK_END)
            h.update(f.read(HASH_BLOCK))
    except OSError:
        return None
    return h.hexdigest()
