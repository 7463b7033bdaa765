"""Shared types of the catalog's contents: item kinds, item states, and the rows read back.

Every layer may import these (the server shows items, the pipeline writes them);
only `indexer.catalog` reads and writes the rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE = "image"
TEXT = "text"
INDEXED = "indexed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class ModelRow:
    id: int
    fingerprint: str
    name: str
    pretrained: str | None
    checkpoint: str | None
    dim: int


@dataclass(frozen=True)
class FileRow:
    """What change detection needs to know of an indexed file."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    decode_tries: int  # runs in a row whose decoder process failed on this version of the file


@dataclass(frozen=True)
class ItemRow:
    id: int
    kind: str
    path: str | None
    text: str | None
    width: int | None
    height: int | None
    taken_at: float | None
    date_key: float | None
    camera: str | None
    size: int | None
    status: str
    reason: str | None
    lens: str | None = None
    focal_mm: float | None = None
    iso: int | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class PrecisionCheck:
    """The fidelity guard's verdict for one model at one reduced precision (`indexer.precision_guard`)."""

    fingerprint: str
    precision: str  # bf16 | int8
    accepted: bool  # images are encoded at `precision` (else at fp32)
    mean_cosine: float  # against fp32, over the first `images` images the library indexed
    min_cosine: float
    images: int
    seconds: float  # the check's one-time cost
    reason: str | None = None  # why it was refused
