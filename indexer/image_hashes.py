"""Fingerprints of an image file's pixels, for telling copies apart: a perceptual hash and a pixel digest.

Both are computed from the file on demand (only for the candidates that `clipdex duplicates`
found close in embedding space), as the decoded, EXIF-oriented picture a viewer shows.
Failures are returned as None, never raised: a file that moved or broke simply matches nothing.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import lru_cache

import numpy as np
from PIL import Image

from indexer.decode import DEFAULT_MAX_PIXELS, _formats, orient, to_rgb

_TAG_ORIENTATION = 0x0112
HASH_SIDE = 32  # the picture is shrunk to 32x32 grey before the DCT, as pHash does
HASH_BITS = 8  # the 8x8 lowest frequencies make the 64-bit hash


def perceptual_hash(path: str | bytes) -> int | None:
    """A 64-bit pHash of the picture (DCT of a 32x32 grey thumbnail, 8x8 lowest frequencies
    against their median), or None when the file cannot be read. Re-encoding, resizing and
    light crops move it a few bits; a different picture differs in about half of them."""
    grey = _grey_thumbnail(path, HASH_SIDE)
    if grey is None:
        return None
    d = _dct_matrix(HASH_SIDE)
    coeffs = (d @ grey @ d.T)[:HASH_BITS, :HASH_BITS]  # (8, 8)
    return _bits_to_int(coeffs > np.median(coeffs))


def difference_hash(path: str | bytes) -> int | None:
    """A 64-bit dHash (is each pixel of a 9x8 grey thumbnail brighter than its right neighbour),
    measured against pHash by benchmarks/duplicates.py; None when the file cannot be read."""
    grey = _grey_thumbnail(path, (HASH_BITS + 1, HASH_BITS))
    if grey is None:
        return None
    return _bits_to_int(grey[:, 1:] > grey[:, :-1])


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


def pixel_digest(path: str | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, str] | None:
    """(width, height, sha256 of the full-resolution RGB pixels) of the oriented picture, or None.

    Two files with the same digest show exactly the same picture, whatever their bytes
    (metadata stripped or edited, a lossless re-save to PNG)."""
    rgb = _oriented_rgb(path, max_pixels)
    return None if rgb is None else (rgb.width, rgb.height, hashlib.sha256(rgb.tobytes()).hexdigest())


def _grey_thumbnail(path: str | bytes, size: int | tuple[int, int]) -> np.ndarray | None:
    w, h = (size, size) if isinstance(size, int) else size
    rgb = _oriented_rgb(path, DEFAULT_MAX_PIXELS, draft=(4 * w, 4 * h))
    if rgb is None:
        return None
    grey = rgb.convert("L")
    small = grey.resize((w, h), Image.Resampling.BOX if min(grey.size) >= 4 * max(w, h) else Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float64)  # (h, w)


def _oriented_rgb(path: str | bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image | None:
    """The picture upright in RGB (a JPEG decoded at about `draft` size when given), or None when it does not decode."""
    img = _open(path, max_pixels)
    if img is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = _orientation(img)
            if draft is not None and img.format in ("JPEG", "MPO"):
                img.draft("RGB", draft)  # DCT-domain downscale: a 12 MP JPEG in a few ms
            img.load()
            out = to_rgb(orient(img, orientation))
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError):
        img.close()
        return None
    if out is not img:  # (an upright RGB picture comes back as itself: closing it would empty it)
        img.close()
    return out


def _orientation(img: Image.Image) -> int:
    value = img.getexif().get(_TAG_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _open(path: str | bytes, max_pixels: int) -> Image.Image | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path, formats=_formats())
            if img.width * img.height > max_pixels:
                return None
            return img
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (n, n): d @ x @ d.T is the 2-D DCT of x."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def _bits_to_int(bits: np.ndarray) -> int:
    out = 0
    for b in bits.ravel():
        out = (out << 1) | int(b)
    return out
