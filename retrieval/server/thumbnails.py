"""Thumbnails: made on demand from an item's file, cached on disk under the library.

Decoding reuses the indexer's orientation and colour handling; JPEGs are decoded
at a reduced scale (draft mode). The saved JPEG is built from bare pixels, so no
EXIF, GPS, maker note or ICC profile of the original survives. A library the
server cannot write to (read-only) gets its thumbnails made on every request.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from indexer.decode import orient, to_rgb
from retrieval.server.errors import ItemNotFound
from retrieval.server.images import ItemFile, open_image, opened_item_file, read_item_file

_VERSION = 1  # bump to invalidate every cached thumbnail
_TAG_ORIENTATION = 0x0112
# Pillow reports corrupt or hostile data with a mix of these.
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError, Image.DecompressionBombError
)


@dataclass(frozen=True)
class Thumbnail:
    etag: str
    path: Path | None  # the cached file, or None when it could not be cached
    data: bytes = b""  # the JPEG itself when path is None


class ThumbnailCache:
    """JPEG thumbnails in `<library>/thumbnails/`, keyed by item, file size and mtime."""

    def __init__(self, folder: Path, max_side: int, max_pixels: int) -> None:
        self.folder = folder
        self.max_side = max_side
        self.max_pixels = max_pixels

    def key(self, item: ItemFile) -> str:
        """The cache key of an item's thumbnail; ItemNotFound unless its file is still the one indexed."""
        with opened_item_file(item) as (_, st):
            raw = f"{_VERSION}|{item.item_id}|{item.recorded.path.hex()}|{st.st_size}|{st.st_mtime_ns}|{self.max_side}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def get(self, item: ItemFile) -> Thumbnail:
        """The cached thumbnail, made now if missing; raises ItemNotFound for an unreadable file."""
        key = self.key(item)
        target = self.folder / key[:2] / f"{key}.jpg"
        if target.is_file():
            return Thumbnail(f'"{key}"', target)
        source = read_item_file(item)
        data = make_thumbnail(source.data, self.max_side, self.max_pixels)
        if data is None:
            raise ItemNotFound(f"item {item.item_id}'s file cannot be decoded; run `clipdex index` to refresh")
        try:
            _write_atomically(target, data)
        except OSError:  # a read-only library (or a full disk): serve it uncached
            return Thumbnail(f'"{key}"', None, data)
        return Thumbnail(f'"{key}"', target)


def make_thumbnail(data: bytes, max_side: int, max_pixels: int) -> bytes | None:
    """A JPEG of at most max_side pixels a side, upright, sRGB, without metadata; None if undecodable."""
    try:
        img = open_image(data)
        if img.size[0] * img.size[1] > max_pixels:
            return None
        orientation = img.getexif().get(_TAG_ORIENTATION, 1)
        img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2..1/8 scale
        img = to_rgb(orient(img, orientation if isinstance(orientation, int) else 1))
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        bare = Image.frombytes("RGB", img.size, img.tobytes())  # pixels only: no info, no EXIF
        out = io.BytesIO()
        bare.save(out, "JPEG", quality=82, optimize=True, progressive=True)
        return out.getvalue()
    except _DECODE_ERRORS:
        return None


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
