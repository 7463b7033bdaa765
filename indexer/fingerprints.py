"""The model fingerprint cache: hash a weights file once, not in every process that loads it.

A fingerprint (`ARCH@DIGEST`, see `models.fingerprint_of`) is a SHA-256 over every
weight: ~1 s for ViT-B-32 on every cold start. This module remembers it per weights
file in `LIBRARY/derived/fingerprints.json`, keyed by the file's path, size, mtime,
ctime and inode and by the open_clip version that loaded it; any change there means
the file is hashed again. Entries also record the model spec they were loaded for,
so a torch-free caller can name a model's fingerprint (`for_spec`) without loading it.
Importing this module imports neither torch nor open_clip.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from indexer.atomic_files import write_bytes

CACHE_FILE = "derived/fingerprints.json"
HASH_VERSION = 1  # of `models.fingerprint_of`: bump it with any change to what it hashes


@dataclass(frozen=True)
class FileStamp:
    """What says a file is unchanged: a write, truncation, `touch` or replacement changes the ctime or inode."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            resolved = path.resolve()
            st = os.stat(resolved)
        except OSError:
            return None
        return cls(str(resolved), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def cached(home: Path, arch: str, stamp: FileStamp) -> str | None:
    """The fingerprint remembered for these weights (as `stamp` shows them) in architecture `arch`, or None."""
    entry = _read(home).get(_key(arch, stamp.path))
    if entry is None or entry.get("stamp") != asdict(stamp) or entry.get("loader") != _loader():
        return None
    fingerprint = entry.get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def for_spec(home: Path, spec_label: str) -> str | None:
    """The fingerprint last computed for the model spec `spec_label`, if its weights file is unchanged since."""
    for entry in _read(home).values():
        if entry.get("spec") != spec_label or not isinstance(entry.get("stamp"), dict):
            continue
        stamp = FileStamp.of(Path(entry["stamp"]["path"]))
        if stamp is not None and entry["stamp"] == asdict(stamp) and entry.get("loader") == _loader():
            fingerprint = entry.get("fingerprint")
            return fingerprint if isinstance(fingerprint, str) else None
    return None


def remember(home: Path, arch: str, stamp: FileStamp, fingerprint: str, spec_label: str) -> None:
    """Record a fingerprint just computed. Best effort: a read-only or full disk only costs a hash next time."""
    entries = _read(home)
    entries[_key(arch, stamp.path)] = {"stamp": asdict(stamp), "loader": _loader(), "fingerprint": fingerprint, "spec": spec_label}
    try:
        write_bytes(home / CACHE_FILE, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())
    except OSError:
        pass


def _key(arch: str, path: str) -> str:
    return f"{arch}|{path}"


def _loader() -> str:
    """What turns the file into the weights that are hashed: the hash version and open_clip's version."""
    try:
        version = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        version = "?"
    return f"{HASH_VERSION}/open_clip-{version}"


def _read(home: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads((home / CACHE_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
