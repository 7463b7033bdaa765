"""Reading image files for serving: only regular files whose bytes are a supported image.

An item's path comes from the catalog, never from a request. Even so the file may
have been swapped since it was indexed (for a symlink, a FIFO, a text file), so
every read re-checks what it got before anything is sent.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from indexer.decode import ALLOWED_FORMATS
from retrieval.server.errors import ItemNotFound, UnsupportedUpload, UploadTooLarge

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ImageFile:
    data: bytes
    format: str  # a Pillow format name from ALLOWED_FORMATS
    width: int
    height: int
    size: int
    mtime_ns: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.format, "application/octet-stream")

    @property
    def etag(self) -> str:
        return f'"{self.size:x}-{self.mtime_ns:x}"'


def open_image(data: bytes) -> Image.Image:
    """A lazily decoded image of a supported format; raises UnidentifiedImageError otherwise."""
    Image.init()
    formats = tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.open(io.BytesIO(data), formats=formats)


def identify(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header, or None when the bytes are no supported image.

    Raises Image.DecompressionBombError for a header claiming far more pixels than any photo.
    """
    try:
        img = open_image(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None
    return str(img.format), img.size[0], img.size[1]


def read_item_file(item_id: int, path: bytes) -> ImageFile:
    """The bytes of an indexed item's file; ItemNotFound unless it is still a readable image."""
    try:
        # O_NONBLOCK: a FIFO swapped in for a photo must not hang the server on open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        why = f"item {item_id}'s file cannot be read ({e.strerror}); run `clipdex index` to refresh"
        raise ItemNotFound(why) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise ItemNotFound(f"item {item_id}'s file is no longer a photo; run `clipdex index` to refresh")
        data = f.read()
    try:
        found = identify(data)
    except Image.DecompressionBombError:
        found = None
    if found is None:
        raise ItemNotFound(f"item {item_id}'s file is no longer a supported image; run `clipdex index` to refresh")
    fmt, w, h = found
    return ImageFile(data, fmt, w, h, st.st_size, st.st_mtime_ns)


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> None:
    """Refuse an upload that is too big, too many pixels (a decompression bomb) or no image."""
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the upload is {_mb(len(data))}, over the {_mb(max_bytes)} limit (--max-upload-mb)")
    if not data:
        raise UnsupportedUpload("the uploaded file is empty")
    try:
        found = identify(data)
    except Image.DecompressionBombError:
        raise UploadTooLarge(f"the uploaded image has more pixels than the {max_pixels:,} pixel limit") from None
    if found is None:
        raise UnsupportedUpload("the uploaded file is not a JPEG, PNG, WebP, GIF, TIFF or BMP image")
    _, w, h = found
    if w * h > max_pixels:
        raise UploadTooLarge(f"the uploaded image is {w}x{h} pixels, over the {max_pixels:,} pixel limit")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
