"""Search filters: the `SearchFilter` value object and its one parser from what a person typed.

The CLI and the HTTP server both build filters with `SearchFilter.parse`; the
catalog builds its SQL from the object (`indexer.filter_sql`), and ranking applies
the score filter. A filter's field says, in its metadata, which of the two applies it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Sequence

from indexer.errors import QueryError

ITEMS = "items"  # narrows the items ranked: the catalog's SQL applies it (indexer.filter_sql)
SCORES = "scores"  # applies to the ranked results' scores
CONTEXT = "context"  # not a filter of its own: says how another one reads (set by ranking, not by a person)
DATE_FORMAT = "an ISO 8601 date (e.g. 2024-07-01 or 2024-07-01T18:30)"
RANGE_FORMAT = "a range MIN..MAX (e.g. 24..70, 800.., ..200 or 50)"
PLACE_FORMAT = "a position LAT,LON in decimal degrees (e.g. 48.8584,2.2945; south and west negative)"
DISTANCE_FORMAT = "a distance such as 5km, 800m or 2.5 (kilometres)"
DEFAULT_WITHIN_KM = 5.0
EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)

Range = tuple[float | None, float | None]  # inclusive bounds; None is open


@dataclass(frozen=True)
class Place:
    """A circle on the Earth: photos taken within `radius_km` of (lat, lon), by great-circle distance."""

    lat: float
    lon: float
    radius_km: float

    def holds(self, lat: float, lon: float) -> bool:
        return haversine_km(self.lat, self.lon, lat, lon) <= self.radius_km


class InvalidFilter(QueryError):
    """A filter value cannot be read; carries the filter's name, the value and what was expected."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"{name} {value!r} is not {expected}")
        self.name = name  # as the caller's user knows it: `after` (HTTP), `--after` (CLI)
        self.value = value
        self.expected = expected

    def renamed(self, name: str) -> InvalidFilter:
        """The same error, naming the filter as another interface does (`--min-score` for `min_score`)."""
        return InvalidFilter(name, self.value, self.expected)


@dataclass(frozen=True)
class SearchFilter:
    """Filters applied before ranking (item fields) and to its scores; a field at its default is off."""

    path_glob: str | None = field(default=None, metadata={"applies": ITEMS})  # fnmatch, absolute (see glob_for)
    after: float | None = field(default=None, metadata={"applies": ITEMS})  # inclusive, epoch seconds
    before: float | None = field(default=None, metadata={"applies": ITEMS})  # exclusive, epoch seconds
    min_score: float | None = field(default=None, metadata={"applies": SCORES})
    # What the camera recorded (indexer.exif): case-insensitive substrings, inclusive ranges, a circle.
    camera: str | None = field(default=None, metadata={"applies": ITEMS})
    lens: str | None = field(default=None, metadata={"applies": ITEMS})
    focal_mm: Range | None = field(default=None, metadata={"applies": ITEMS})
    iso: Range | None = field(default=None, metadata={"applies": ITEMS})
    near: Place | None = field(default=None, metadata={"applies": ITEMS})
    has_gps: bool = field(default=False, metadata={"applies": ITEMS})
    tags: tuple[str, ...] = field(default=(), metadata={"applies": ITEMS})  # every one (`clipdex tag`, folder tags)
    # Whose tags `tags` reads: this model's and the folders' (tags are stored per model); None: any model's.
    tag_model: int | None = field(default=None, metadata={"applies": CONTEXT})

    @classmethod
    def parse(
        cls,
        *,
        path: str | None = None,
        after: str | None = None,
        before: str | None = None,
        min_score: str | float | None = None,
        camera: str | None = None,
        lens: str | None = None,
        focal: str | None = None,
        iso: str | None = None,
        near: str | None = None,
        within: str | None = None,
        has_gps: bool | str | None = None,
        tag: Sequence[str] | None = None,
    ) -> SearchFilter:
        """A filter from the user's strings, named as the CLI options and HTTP parameters are.

        None or "" leaves a filter off. Raises InvalidFilter (a QueryError) naming the
        parameter, so each interface can word it with its own spelling.
        """
        return cls(
            path_glob=glob_for(path) if path else None,
            after=parse_date(after, "after") if after else None,
            before=parse_date(before, "before") if before else None,
            min_score=None if min_score is None or min_score == "" else _parse_score(min_score, "min_score"),
            camera=camera.strip() or None if camera else None,
            lens=lens.strip() or None if lens else None,
            focal_mm=parse_range(focal, "focal") if focal else None,
            iso=parse_range(iso, "iso") if iso else None,
            near=parse_place(near, within),
            has_gps=_parse_flag(has_gps, "has_gps"),
            tags=tuple(dict.fromkeys(t.strip() for t in tag or () if t.strip())),
        )

    def item_filters(self) -> dict[str, object]:
        """The item fields that are on, by name: what the catalog turns into SQL."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.metadata["applies"] == ITEMS and getattr(self, f.name) != f.default
        }

    @property
    def narrows_items(self) -> bool:
        return bool(self.item_filters())


def glob_for(pattern: str) -> str:
    """A --path GLOB as matched against absolute paths.

    `~` expands; a relative pattern matches at any depth (`2021/*` matches
    `/home/me/Photos/2021/a.jpg`); `*` spans folders.
    """
    pattern = os.path.expanduser(pattern)
    if pattern.startswith(("/", "*")):
        return pattern
    return "*/" + pattern


def parse_date(text: str, name: str) -> float:
    """An ISO 8601 date or date-time as epoch seconds; naive values are local time.

    Raises InvalidFilter naming the value as `name`.
    """
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise InvalidFilter(name, text, DATE_FORMAT) from None


def parse_range(text: str, name: str) -> Range:
    """`MIN..MAX`, `MIN..`, `..MAX` or a single value N (MIN = MAX = N), as inclusive bounds."""
    lo_text, dots, hi_text = text.strip().partition("..")
    if not dots:
        hi_text = lo_text
    try:
        lo = float(lo_text) if lo_text.strip() else None
        hi = float(hi_text) if hi_text.strip() else None
    except ValueError:
        raise InvalidFilter(name, text, RANGE_FORMAT) from None
    bounds = [b for b in (lo, hi) if b is not None]
    if not bounds or not all(math.isfinite(b) for b in bounds) or (lo is not None and hi is not None and lo > hi):
        raise InvalidFilter(name, text, RANGE_FORMAT)
    return lo, hi


def parse_place(near: str | None, within: str | None) -> Place | None:
    """`--near LAT,LON` with `--within DISTANCE` (DEFAULT_WITHIN_KM when left out); None without --near."""
    if not near:
        if within:
            raise InvalidFilter("within", within, "used with near (a position LAT,LON)")
        return None
    parts = near.replace(" ", "").split(",")
    try:
        lat, lon = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lat = lon = math.nan
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # NaN fails both
        raise InvalidFilter("near", near, PLACE_FORMAT)
    return Place(lat, lon, parse_distance_km(within) if within else DEFAULT_WITHIN_KM)


def parse_distance_km(text: str) -> float:
    """`5km`, `800m` or a bare number of kilometres."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(km|m)?\s*", text.lower())
    if match is None or float(match[1]) <= 0:
        raise InvalidFilter("within", text, DISTANCE_FORMAT)
    value = float(match[1])
    return value / 1000 if match[2] == "m" else value


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere of the Earth's mean radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _parse_flag(value: bool | str | None, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = value.strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise InvalidFilter(name, value, "true or false (1 or 0)")


def _parse_score(value: str | float, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if math.isnan(score):
        raise InvalidFilter(name, str(value), "a number (scores run from -1 to 1)")
    return score
