"""Files derived from a model (an ONNX export, a quantised copy), cached per model fingerprint.

This module owns `LIBRARY/derived/`. Like the FAISS files, these are derived data:
built on demand, validated when built, rebuilt when missing, damaged or stale,
and never used for another model. One entry is one kind of file for one model:

    derived/<arch>-<digest of the fingerprint>/<kind>.onnx       the file (and any <kind>.* companions)
    derived/<arch>-<digest of the fingerprint>/<kind>.tag.json   what it is, written last

The tag names the fingerprint, the kind and its version (how clipdex builds it),
the library versions that built it, the validation figures, what a user of the
file needs to know (`info`: a tokenizer recipe, an input size), and each file's
size, SHA-256 and inode/mtime/ctime as written. A look-up trusts a file whose
size, inode, mtime and ctime are unchanged since it was hashed (any write,
truncation, `touch` or replacement changes the ctime, which no tool can set
back), and re-hashes it otherwise: a copied library costs one hash, not one per
search (SHA-256 of a 250 MB text tower takes ~0.2 s, most of a cold search).

A build that the validation refuses is recorded too (a tag with `refused` and no
files), so a cold search does not retry a failing export every time. Importing
this module imports neither torch nor onnx.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from indexer.atomic_files import fsync_dir, is_disk_full, remove_stale_temps, temp_path, write_bytes
from indexer.errors import ClipdexError, DiskFull

DERIVED_DIR = "derived"
TAG_FORMAT = 1  # the tag's own layout
_TAG_SUFFIX = ".tag.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DerivedKind:
    """One kind of derived file: its name (and file name), and the version of the way clipdex builds it.

    Bumping `version` makes every file built the old way stale, so it is rebuilt.
    """

    name: str  # file stem: `<name>.<suffix>`, companions `<name>.*`
    suffix: str  # of the main file, with its dot
    version: int

    @property
    def filename(self) -> str:
        return self.name + self.suffix


TEXT_ENCODER = DerivedKind("text-encoder", ".onnx", 2)  # token ids → unit vectors (2: dynamic length)
IMAGE_ENCODER = DerivedKind("image-encoder", ".onnx", 2)  # uint8 pixels → unit vectors; 2: the tag has the resize rules
IMAGE_ENCODER_INT8 = DerivedKind("image-encoder-int8", ".onnx", 1)  # the same, int8 (indexer.quantised_export)
TEXT_ENCODER_INT8 = DerivedKind("text-encoder-int8", ".onnx", 1)  # the text tower, int8 (indexer.quantised_export)


class DerivedRejected(ClipdexError):
    """A derived file cannot be made for this model (unsupported, or it failed validation); use the model itself."""

    def __init__(self, kind: str, fingerprint: str, reason: str) -> None:
        super().__init__(f"no {kind} for model {fingerprint}: {reason}")
        self.kind = kind
        self.fingerprint = fingerprint
        self.reason = reason


@dataclass(frozen=True)
class FileRecord:
    """One file of an entry, as written: what a look-up checks."""

    name: str
    size_bytes: int
    sha256: str
    inode: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class Built:
    """What a build function reports besides its files."""

    versions: dict[str, str] = field(default_factory=dict)  # libraries and formats that built it
    info: dict[str, Any] = field(default_factory=dict)  # what a user of the file needs


@dataclass(frozen=True)
class DerivedTag:
    fingerprint: str
    kind: str
    kind_version: int
    created: str  # ISO 8601, UTC
    files: tuple[FileRecord, ...]
    versions: dict[str, str]
    validation: dict[str, float]
    info: dict[str, Any]
    refused: str | None = None  # why none could be made; no files then
    format: int = TAG_FORMAT


@dataclass(frozen=True)
class Derived:
    """A valid entry: its folder and tag."""

    folder: Path
    kind: DerivedKind
    tag: DerivedTag

    @property
    def path(self) -> Path:
        """The main file."""
        return self.folder / self.kind.filename

    def companion(self, suffix: str) -> Path:
        """A companion file `<kind><suffix>`, e.g. `.tokenizer.json`."""
        return self.folder / (self.kind.name + suffix)


@dataclass(frozen=True)
class Refused:
    """A recorded refusal: nothing can be derived for this model and kind version."""

    reason: str


BuildFn = Callable[[Path], Built]  # writes `<kind>.*` files into the folder it is given
ValidateFn = Callable[[Path], dict[str, float]]  # checks them there; raises DerivedRejected


def entry_folder(home: Path, fingerprint: str) -> Path:
    """`home/derived/<arch>-<digest>`: readable, and distinct for every fingerprint."""
    arch = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint.split("@", 1)[0])[:48]
    return home / DERIVED_DIR / f"{arch}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}"


def remove_stale_work(home: Path) -> list[Path]:
    """Delete what killed processes left half-built under `LIBRARY/derived` (temp files and folders)."""
    root = home / DERIVED_DIR
    removed = remove_stale_temps(root)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
                removed += remove_stale_temps(entry)
    return removed


def lookup(home: Path, fingerprint: str, kind: DerivedKind, *, full_check: bool = False) -> Derived | Refused | None:
    """The valid entry for (fingerprint, kind), a recorded refusal, or None when there is
    no usable one (missing, truncated, damaged, stale, or built for another fingerprint).

    With `full_check`, every file is hashed even when its stat says it is unchanged.
    Never raises for a bad entry: a bad entry is simply not there.
    """
    folder = entry_folder(home, fingerprint)
    tag = _read_tag(folder / (kind.name + _TAG_SUFFIX))
    if tag is None or (tag.fingerprint, tag.kind, tag.kind_version) != (fingerprint, kind.name, kind.version):
        return None
    if tag.refused is not None:
        return Refused(tag.refused)
    if kind.filename not in {f.name for f in tag.files}:
        return None
    fresh = []
    for rec in tag.files:
        checked = _check(folder / rec.name, rec, full_check)
        if checked is None:
            return None
        fresh.append(checked)
    if tuple(fresh) != tag.files:  # hashed again after a copy: remember the new stat (best effort)
        tag = DerivedTag(**{**asdict(tag), "files": tuple(fresh)})
        try:
            _write_tag(folder, kind, tag)
        except OSError:
            pass
    return Derived(folder, kind, tag)


def get_or_build(home: Path, fingerprint: str, kind: DerivedKind, build: BuildFn, validate: ValidateFn) -> Derived:
    """The entry for (fingerprint, kind), built, validated and saved first if there is no valid one.

    Raises DerivedRejected when validation refuses the build (or refused it before: the
    refusal is recorded), DiskFull when the disk fills up (nothing half-written is left).
    """
    return _get(home, fingerprint, kind, build, validate, reuse=True)


def rebuild(home: Path, fingerprint: str, kind: DerivedKind, build: BuildFn, validate: ValidateFn) -> Derived:
    """Build, validate and save the entry whatever is there now; raises as `get_or_build`."""
    return _get(home, fingerprint, kind, build, validate, reuse=False)


def _get(home: Path, fingerprint: str, kind: DerivedKind, build: BuildFn, validate: ValidateFn, reuse: bool) -> Derived:
    folder = entry_folder(home, fingerprint)
    work = temp_path(folder / kind.name)  # a private folder: `.NAME.PID.tmp`, swept if this process dies
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # One builder per entry: a second process waits, then finds the first one's work.
        with _BuildLock(folder / f".{kind.name}.lock"):
            found = lookup(home, fingerprint, kind) if reuse else None
            if isinstance(found, Refused):
                raise DerivedRejected(kind.name, fingerprint, found.reason)
            if found is not None:
                return found
            remove_stale_temps(folder)
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            try:
                built = build(work)
                validation = validate(work)
            except DerivedRejected as e:
                _refuse(folder, kind, fingerprint, e.reason)
                raise
            return _install(folder, kind, fingerprint, work, built, validation)
    except BaseException as e:
        if is_disk_full(e):
            raise DiskFull(
                f"cannot save the {kind.name} of model {fingerprint} in {folder}: no space left on the device; "
                "free some space and run the command again (nothing half-written was left)"
            ) from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _BuildLock:
    """A blocking flock, released by the kernel if its holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _install(folder: Path, kind: DerivedKind, fingerprint: str, work: Path, built: Built, validation: dict[str, float]) -> Derived:
    names = sorted(os.listdir(work))
    if kind.filename not in names:
        raise ValueError(f"the {kind.name} build wrote no {kind.filename}")
    bad = [n for n in names if not n.startswith(kind.name + ".") or n.endswith(_TAG_SUFFIX)]
    if bad:
        raise ValueError(f"the {kind.name} build wrote files it may not: {bad}")
    digests = {}
    for name in names:
        digests[name] = _sha256(work / name)
        fsync_dir(work / name)  # os.open + fsync works on files too
    # No tag may describe a half-replaced set of files: drop it before the first rename.
    (folder / (kind.name + _TAG_SUFFIX)).unlink(missing_ok=True)
    for name in names:
        os.replace(work / name, folder / name)
    fsync_dir(folder)
    records = []
    for name in names:
        st = os.stat(folder / name)  # after the rename, which changes the ctime
        records.append(FileRecord(name, st.st_size, digests[name], st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    tag = DerivedTag(
        fingerprint, kind.name, kind.version, _now(), tuple(records), dict(built.versions), dict(validation), dict(built.info)
    )
    _write_tag(folder, kind, tag)
    for name in os.listdir(folder):  # companions of an older build that this one did not write
        if name.startswith(kind.name + ".") and name not in names and not name.endswith(_TAG_SUFFIX):
            (folder / name).unlink(missing_ok=True)
    return Derived(folder, kind, tag)


def _refuse(folder: Path, kind: DerivedKind, fingerprint: str, reason: str) -> None:
    (folder / (kind.name + _TAG_SUFFIX)).unlink(missing_ok=True)
    for name in os.listdir(folder):
        if name.startswith(kind.name + "."):
            (folder / name).unlink(missing_ok=True)
    _write_tag(folder, kind, DerivedTag(fingerprint, kind.name, kind.version, _now(), (), {}, {}, {}, reason))


def _write_tag(folder: Path, kind: DerivedKind, tag: DerivedTag) -> None:
    write_bytes(folder / (kind.name + _TAG_SUFFIX), (json.dumps(asdict(tag), indent=1) + "\n").encode())


def _read_tag(path: Path) -> DerivedTag | None:
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict) or raw.get("format") != TAG_FORMAT:
            return None
        files = tuple(FileRecord(**f) for f in raw.pop("files"))
        tag = DerivedTag(files=files, **raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return tag if isinstance(tag.fingerprint, str) and isinstance(tag.info, dict) else None


def _check(path: Path, rec: FileRecord, full_check: bool) -> FileRecord | None:
    """The file's record if its content is the one recorded (with its current stat), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != rec.size_bytes:
        return None
    same_stat = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == (rec.inode, rec.mtime_ns, rec.ctime_ns)
    if same_stat and not full_check:
        return rec
    try:
        if _sha256(path) != rec.sha256:
            return None
    except OSError:
        return None
    return FileRecord(rec.name, st.st_size, rec.sha256, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
