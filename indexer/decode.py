"""Decode image files into model-sized uint8 arrays plus their metadata.

`decode_images` is a pure batch function (paths in, arrays and metadata out) with
no hidden state, so the same code runs in worker processes or a distributed engine.
Every failure is returned as a `DecodeFailure` with a reason, never raised.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Sequence

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from indexer.exif import PhotoExif, read_exif

pillow_heif.register_heif_opener()  # HEIC/HEIF from phones; AVIF is Pillow's own where built in

# Formats a photo library holds. Everything else Pillow could parse (PSD, EPS, ICO…)
# is refused, which also keeps rarely-audited decoders away from untrusted files.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO", "HEIF", "AVIF")
DEFAULT_MAX_PIXELS = 100_000_000
TRANSPARENT_BACKGROUND = (255, 255, 255)

_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_IFD_EXIF = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_SRGB = ImageCms.createProfile("sRGB")
_STRIP_PIXELS = 1 << 20  # pixels per strip when scaling 16/32-bit images down to 8 bits


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input image: size and open_clip's resize rules."""

    height: int
    width: int
    resize_mode: str = "shortest"  # shortest (resize + centre crop), longest (pad), squash
    interpolation: str = "bicubic"
    fill_color: int = 0


@dataclass(frozen=True)
class ImageInfo:
    """Metadata of a decoded image, as displayed (after EXIF orientation)."""

    width: int
    height: int
    taken_at: float | None  # EXIF capture time, seconds since the epoch
    camera: str | None
    orientation: int
    exif: PhotoExif = PhotoExif()  # lens, focal length, ISO, GPS (indexer.exif)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 at the model's input size
    info: ImageInfo


@dataclass(frozen=True)
class DecodeFailure:
    reason: str


DecodeResult = DecodedImage | DecodeFailure


def decode_images(
    paths: Sequence[str | bytes], spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[DecodeResult]:
    """Decode each path; the result list is aligned with `paths`."""
    return [decode_image(p, spec, max_pixels) for p in paths]


def decode_image(path: str | bytes, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodeResult:
    """Decode one file, returning a DecodeFailure (with reason) instead of raising."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return DecodeFailure(f"unreadable: {e.strerror or e}")
    return decode_bytes(data, spec, max_pixels)


def decode_bytes(data: bytes, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodeResult:
    """Decode an in-memory image file (an upload, or a file already read)."""
    if not data:
        return DecodeFailure("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=_formats())
            w, h = img.size
            if w * h > max_pixels:
                return DecodeFailure(f"too large: {w}x{h} pixels is over the {max_pixels:,} pixel limit")
            info = _read_info(img)
            _draft_for(img, spec)
            img.load()
            return DecodedImage(_to_model_input(to_rgb(orient(img, info.orientation)), spec), info)
    except Image.DecompressionBombError as e:
        return DecodeFailure(f"too large: {e}")
    except UnidentifiedImageError:
        return DecodeFailure("not a supported image format")
    except MemoryError:
        return DecodeFailure("out of memory while decoding")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        # Pillow reports truncated and corrupt data with a mix of these.
        return DecodeFailure(f"corrupt image: {e}")


def _formats() -> tuple[str, ...]:
    Image.init()  # Pillow registers plugins lazily; MPO (phone JPEGs) needs them loaded
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def orient(img: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1-8) to the pixels."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return img.transpose(method) if method is not None else img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit sRGB without clipping or dropping colour."""
    icc = img.info.get("icc_profile")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _scale_to_l(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if icc and img.mode in ("RGB", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(img, src, _SRGB, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to Pillow's plain conversion
    return img if img.mode == "RGB" else img.convert("RGB")


def _scale_to_l(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit greyscale, a strip of rows at a time.

    The full 16-bit range maps onto 8 bits; a float image, or integers outside
    0..65535, is stretched from min(0, lowest) to max(1, highest). Working in strips
    keeps the temporaries to a few MB: full-size float64 copies of a 64 MP upload
    took 2.5 GB.
    """
    lo, hi = 0.0, 1.0
    for _, strip in _strips(img):
        lo, hi = min(lo, float(strip.min(initial=0))), max(hi, float(strip.max(initial=1)))
    stretch = img.mode == "F" or hi > 65535 or lo < 0
    out = Image.new("L", img.size)
    for top, strip in _strips(img):
        if stretch:
            scaled = (strip.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255.0
            strip8 = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        else:
            # round(v / 257) in integers: v / 257 is never exactly halfway (257 is odd).
            strip8 = ((strip.astype(np.uint32) + 128) // 257).astype(np.uint8)
        out.paste(Image.fromarray(strip8), (0, top))
    return out


def _strips(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(top row, (h, W) array) for each strip of about _STRIP_PIXELS pixels."""
    rows = max(1, _STRIP_PIXELS // max(1, img.width))
    for top in range(0, img.height, rows):
        yield top, np.asarray(img.crop((0, top, img.width, min(top + rows, img.height))))


def _read_info(img: Image.Image) -> ImageInfo:
    exif = img.getexif()
    orientation = exif.get(_TAG_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    w, h = img.size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    sub = exif.get_ifd(_IFD_EXIF)
    taken = _parse_exif_time(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME), sub.get(_TAG_OFFSET_TIME_ORIGINAL))
    make = str(exif.get(_TAG_MAKE) or "").strip("\x00 ")
    model = str(exif.get(_TAG_MODEL) or "").strip("\x00 ")
    camera = model if model.startswith(make) else f"{make} {model}".strip()
    return ImageInfo(w, h, taken, camera or None, orientation, read_exif(exif))


def _parse_exif_time(value: object, offset: object) -> float | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS'; naive times are local time, as cameras write them."""
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ")
    if isinstance(offset, str) and len(offset.strip("\x00 ")) == 6:
        text += offset.strip("\x00 ")
        fmt = "%Y:%m:%d %H:%M:%S%z"
    else:
        fmt = "%Y:%m:%d %H:%M:%S"
    try:
        return datetime.strptime(text, fmt).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _draft_for(img: Image.Image, spec: InputSpec) -> None:
    """Let libjpeg downscale in the DCT domain to the smallest scale that covers the model input.

    Both sides stay at least the model's longer side, so every resize mode still
    downsamples (never upsamples) afterwards. On 12 MP phone photos this is 1/8
    scale: 43 ms instead of 55 ms at 1/4, at 50 dB mean PSNR against a full decode
    (benchmarks/index_throughput.py).
    """
    if img.format not in ("JPEG", "MPO"):
        return
    side = max(spec.height, spec.width)
    img.draft("RGB", (side, side))


def _to_model_input(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize and crop exactly as open_clip's inference preprocessing does."""
    resample = _RESAMPLE.get(spec.interpolation, Image.Resampling.BICUBIC)
    th, tw = spec.height, spec.width
    w, h = img.size
    if spec.resize_mode == "squash":
        return np.asarray(img.resize((tw, th), resample, reducing_gap=3.0))
    if spec.resize_mode == "longest":
        scale = min(th / h, tw / w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (tw, th), (spec.fill_color,) * 3)
        canvas.paste(img.resize((nw, nh), resample, reducing_gap=3.0), ((tw - nw) // 2, (th - nh) // 2))
        return np.asarray(canvas)
    if th == tw:
        # torchvision's Resize(int): the short side becomes S, the long side truncates.
        nw, nh = (th, int(th * h / w)) if w <= h else (int(th * w / h), th)
    else:
        scale = max(th / h, tw / w)
        nw, nh = round(w * scale), round(h * scale)
    resized = img.resize((nw, nh), resample, reducing_gap=3.0) if (nw, nh) != (w, h) else img
    top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
    return np.asarray(resized.crop((left, top, left + tw, top + th)))


def path_str(path: str | bytes) -> str:
    """A displayable form of a path that may not be valid UTF-8."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
