"""Reading image files for serving: only the regular file the catalog recorded, holding a supported image.

An item's path comes from the catalog, never from a request. Even so the file may
have been swapped since it was indexed (for a symlink, a FIFO, a folder, another
photo), so every read opens the path one component at a time without following a
symbolic link, checks that it lies under one of the library's roots, and that the
opened file has the size and modification time the catalog recorded, before
anything is sent.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from PIL import Image, UnidentifiedImageError

from indexer.items import FileRow
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
_REFRESH = "run `clipdex index` to refresh"
_NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


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


@dataclass(frozen=True)
class ItemFile:
    """Where an indexed photo's file is, as the catalog recorded it, and the roots it must lie under."""

    item_id: int
    recorded: FileRow
    roots: Sequence[bytes]


@contextmanager
def opened_item_file(item: ItemFile) -> Iterator[tuple[int, os.stat_result]]:
    """(descriptor, stat) of the item's file, closed on exit; ItemNotFound unless it is the
    regular file the catalog recorded, reached through no symbolic link, under a root."""
    item_id, recorded = item.item_id, item.recorded
    if not any(_is_under(recorded.path, root) for root in item.roots):
        raise ItemNotFound(f"item {item_id}'s file is outside the library's folders; {_REFRESH}")
    fd = _open_no_symlinks(item_id, recorded.path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise ItemNotFound(f"item {item_id}'s file is no longer a photo; {_REFRESH}")
        if (st.st_size, st.st_mtime_ns) != (recorded.size, recorded.mtime_ns):
            raise ItemNotFound(f"item {item_id}'s file has changed since it was indexed; {_REFRESH}")
        yield fd, st
    finally:
        os.close(fd)


def read_item_file(item: ItemFile) -> ImageFile:
    """The bytes of an indexed item's file; ItemNotFound unless it is still the recorded, readable image."""
    with opened_item_file(item) as (fd, st), open(fd, "rb", closefd=False) as f:
        data = f.read(MAX_FILE_BYTES + 1)
    try:
        found = identify(data)
    except Image.DecompressionBombError:
        found = None
    if found is None:
        raise ItemNotFound(f"item {item.item_id}'s file is no longer a supported image; {_REFRESH}")
    fmt, w, h = found
    return ImageFile(data, fmt, w, h, st.st_size, st.st_mtime_ns)


def _open_no_symlinks(item_id: int, path: bytes) -> int:
    """A read-only descriptor of `path`, opened a component at a time from `/` with O_NOFOLLOW,
    so a symbolic link anywhere on the way (the file or a folder above it) is refused.
    O_NONBLOCK: a FIFO swapped in for a photo must not hang the server on open."""
    parts = path.split(b"/")
    if not path.startswith(b"/") or any(p in (b".", b"..") for p in parts):
        raise ItemNotFound(f"item {item_id}'s recorded path is not a plain absolute path; {_REFRESH}")
    try:
        fd = os.open(b"/", os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
        for folder in (p for p in parts[1:-1] if p):
            try:
                below = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=fd)
            finally:
                os.close(fd)
            fd = below
        try:
            return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise ItemNotFound(f"item {item_id}'s file cannot be read ({_why(e)}); {_REFRESH}") from None


def _why(e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: BSDs' O_NOFOLLOW error
        return "it is now a symbolic link"
    if e.errno == errno.ENOTDIR:  # what Linux answers for a symlinked folder opened with O_NOFOLLOW
        return "a folder on its path is now a symbolic link, or not a folder"
    return e.strerror or str(e)


def _is_under(path: bytes, root: bytes) -> bool:
    base = root.rstrip(b"/")
    return path == root or path.startswith(base + b"/")


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
