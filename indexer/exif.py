"""What a photo's EXIF says about the lens, focal length, ISO and place it was taken.

`read_exif` reads a Pillow `Exif` (the header only: no pixels are decoded), so the
indexer calls it while decoding a new file and, for files indexed before these
fields existed, on its own (`read_file_exif`). Values a camera wrote wrongly (a zero
denominator, a latitude of 95°, a reference that is neither N nor S) are dropped,
field by field: a bad GPS block leaves the lens and ISO alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from PIL import Image

EXIF_VERSION = 1  # bump when the reader learns a field: items read by an older one are read again

_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_TAG_ISO = 0x8827  # ISOSpeedRatings / PhotographicSensitivity
_TAG_FOCAL_LENGTH = 0x920A
_TAG_LENS_MAKE = 0xA433
_TAG_LENS_MODEL = 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_MAX_FOCAL_MM = 10_000.0
_MAX_ISO = 10_000_000


@dataclass(frozen=True)
class PhotoExif:
    """The EXIF fields clipdex filters on, beyond camera and capture time; None where absent or malformed."""

    lens: str | None = None
    focal_mm: float | None = None
    iso: int | None = None
    lat: float | None = None  # degrees, south negative
    lon: float | None = None  # degrees, west negative


def read_exif(exif: Image.Exif) -> PhotoExif:
    """The fields of an image's EXIF; never raises on what a file contains."""
    try:
        sub = exif.get_ifd(_IFD_EXIF)
        gps = exif.get_ifd(_IFD_GPS)
    except (KeyError, ValueError, TypeError, OSError, SyntaxError):
        return PhotoExif()
    lat, lon = _position(gps)
    return PhotoExif(_lens(sub), _focal_mm(sub.get(_TAG_FOCAL_LENGTH)), _iso(sub.get(_TAG_ISO)), lat, lon)


def read_file_exif(path: str | bytes) -> PhotoExif | None:
    """The fields of a file's EXIF, reading its header only; None when the file cannot be opened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return read_exif(img.getexif())
    except Exception:  # noqa: BLE001 - a file that changed or broke since it was indexed: its next decode says why
        return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 ") if isinstance(value, str) else ""


def _lens(sub: dict[int, object]) -> str | None:
    make, model = _text(sub.get(_TAG_LENS_MAKE)), _text(sub.get(_TAG_LENS_MODEL))
    lens = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    return lens or None


def _number(value: object) -> float | None:
    """A rational (Pillow's IFDRational, or a (numerator, denominator) pair) or a number, if finite."""
    try:
        if isinstance(value, tuple) and len(value) == 2:
            num, den = float(value[0]), float(value[1])
            number = num / den if den else math.nan
        else:
            number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _focal_mm(value: object) -> float | None:
    mm = _number(value)
    return round(mm, 2) if mm is not None and 0 < mm <= _MAX_FOCAL_MM else None


def _iso(value: object) -> int | None:
    if isinstance(value, (tuple, list)):  # ISOSpeedRatings may hold several: the first is the setting
        value = value[0] if value else None
    iso = _number(value)
    return int(iso) if iso is not None and 0 < iso <= _MAX_ISO and iso == int(iso) else None


def _position(gps: dict[int, object]) -> tuple[float | None, float | None]:
    """(lat, lon) with signs from their references, or (None, None) unless both are sound.

    0°, 0° is taken as absent: it is what phones without a fix write.
    """
    lat = _degrees(gps.get(_GPS_LAT), _text(gps.get(_GPS_LAT_REF)).upper(), "N", "S", 90.0)
    lon = _degrees(gps.get(_GPS_LON), _text(gps.get(_GPS_LON_REF)).upper(), "E", "W", 180.0)
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None, None
    return lat, lon


def _degrees(value: object, ref: str, positive: str, negative: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (three rationals) and a reference letter as signed degrees."""
    if ref not in (positive, negative) or not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        return None
    numbers = [_number(v) for v in value]
    parts = [n for n in numbers if n is not None and n >= 0]
    if len(parts) != len(numbers):
        return None
    d, m, s = (parts + [0.0, 0.0])[:3]
    if m >= 60 or s >= 60:
        return None
    degrees = d + m / 60 + s / 3600
    if degrees > limit:
        return None
    return round(-degrees if ref == negative else degrees, 7)
