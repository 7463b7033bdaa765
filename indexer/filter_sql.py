"""The catalog's SQL for a `SearchFilter`: one clause builder per item filter.

Part of the catalog: only `indexer.catalog` runs these queries. `CLAUSES` maps each
item field of SearchFilter to the function that builds its clause, so adding a
filter adds one entry (tests/test_filters.py checks that every item field has one).
The clauses are SQLAlchemy Core that SQLite and PostgreSQL both run.

Path globs have no portable SQL form (GLOB is SQLite's alone; regular expressions
differ per backend), so the path clause is a LIKE that every matching path also
matches, and the exact fnmatch test runs in Python on the rows it returns. A place
works the same way: a latitude/longitude box around the circle (ix_items_gps), then
the great-circle distance of each row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Callable

from sqlalchemy import Column, ColumnElement, Row, Select, and_, or_, select, true

from indexer.filters import EARTH_RADIUS_KM, Place, Range, SearchFilter
from indexer.items import INDEXED
from indexer.schema import items, tags

_LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class Clause:
    """One filter in SQL: a WHERE clause and, where SQL can only narrow, an exact test of each row."""

    where: ColumnElement[bool]
    exact: Callable[[Row[Any]], bool] | None = None
    reads: tuple[Column[Any], ...] = ()  # the columns `exact` reads


def path_clause(glob: str) -> Clause:
    pattern = re.compile(translate(glob))

    def matches(row: Row[Any]) -> bool:
        return row.display_path is not None and pattern.match(row.display_path) is not None

    return Clause(items.c.display_path.like(like_pattern(glob), escape=_LIKE_ESCAPE), matches, (items.c.display_path,))


def after_clause(epoch_s: float) -> Clause:
    return Clause(items.c.date_key >= epoch_s)


def before_clause(epoch_s: float) -> Clause:
    return Clause(items.c.date_key < epoch_s)


def substring_clause(column: Column[Any]) -> Callable[[str], Clause]:
    """Case-insensitive substring (ILIKE: lower() on SQLite, which folds ASCII letters only)."""

    def clause(text: str) -> Clause:
        escaped = "".join(_LIKE_ESCAPE + ch if ch in "%_" + _LIKE_ESCAPE else ch for ch in text)
        return Clause(column.ilike(f"%{escaped}%", escape=_LIKE_ESCAPE))

    return clause


def range_clause(column: Column[Any]) -> Callable[[Range], Clause]:
    def clause(bounds: Range) -> Clause:
        lo, hi = bounds
        conds: list[ColumnElement[bool]] = [column.is_not(None)]
        conds += [column >= lo] if lo is not None else []
        conds += [column <= hi] if hi is not None else []
        return Clause(and_(*conds))

    return clause


def near_clause(place: Place) -> Clause:
    """A box that holds the circle, narrowed to the circle by the distance of each row."""
    lat, lon = items.c.gps_lat, items.c.gps_lon
    dlat = math.degrees(place.radius_km / EARTH_RADIUS_KM)
    lat_lo, lat_hi = place.lat - dlat, place.lat + dlat
    box: list[ColumnElement[bool]] = [lat >= max(lat_lo, -90.0), lat <= min(lat_hi, 90.0), lon.is_not(None)]
    if lat_lo > -90 and lat_hi < 90:  # no pole inside: the circle spans a bounded band of longitudes
        dlon = math.degrees(math.asin(min(1.0, math.sin(math.radians(dlat)) / math.cos(math.radians(place.lat)))))
        if dlon < 180:
            west, east = place.lon - dlon, place.lon + dlon
            if west < -180:  # across the antimeridian: two bands
                box.append(or_(lon >= west + 360, lon <= east))
            elif east > 180:
                box.append(or_(lon >= west, lon <= east - 360))
            else:
                box += [lon >= west, lon <= east]

    def within(row: Row[Any]) -> bool:
        return row.gps_lat is not None and row.gps_lon is not None and place.holds(row.gps_lat, row.gps_lon)

    return Clause(and_(*box), within, (lat, lon))


def has_gps_clause(on: bool) -> Clause:
    return Clause(items.c.gps_lat.is_not(None) if on else true())


def tags_clause(labels: tuple[str, ...], model_id: int | None = None) -> Clause:
    """Items holding every label, from model `model_id` (None: any model) or their folders (ix_tags_label)."""
    source = true() if model_id is None else or_(tags.c.model_id.is_(None), tags.c.model_id == model_id)
    return Clause(and_(*(items.c.id.in_(select(tags.c.item_id).where(tags.c.label == label, source)) for label in labels)))


CLAUSES: dict[str, Callable[[Any], Clause]] = {
    "path_glob": path_clause,
    "after": after_clause,
    "before": before_clause,
    "camera": substring_clause(items.c.camera),
    "lens": substring_clause(items.c.lens),
    "focal_mm": range_clause(items.c.focal_mm),
    "iso": range_clause(items.c.iso),
    "near": near_clause,
    "has_gps": has_gps_clause,
    "tags": tags_clause,
}


def like_pattern(glob: str) -> str:
    """A LIKE pattern that every path `glob` matches (fnmatch) also matches.

    `*` is `%` and `?` is `_`; a `[...]` set, and everything after it, widens to `%`
    (fnmatch's rules for sets are not worth copying: the exact test follows).
    """
    out: list[str] = []  # one LIKE token per glob character
    for ch in glob:
        token = {"*": "%", "?": "_", "[": "%"}.get(ch) or (_LIKE_ESCAPE + ch if ch in "%_" + _LIKE_ESCAPE else ch)
        if not (token == "%" and out and out[-1] == "%"):
            out.append(token)
        if ch == "[":
            break
    return "".join(out)


@dataclass(frozen=True)
class FilterQuery:
    """The ids query for one kind and filter, and the exact tests its rows must still pass."""

    statement: Select[Any]
    checks: tuple[Callable[[Row[Any]], bool], ...]

    def keeps(self, row: Row[Any]) -> bool:
        return all(check(row) for check in self.checks)


def filter_query(kind: str, flt: SearchFilter) -> FilterQuery:
    """Indexed items of `kind` passing every item filter that is on; rows carry `id` and what the checks read."""
    clauses = [
        tags_clause(flt.tags, flt.tag_model) if name == "tags" else CLAUSES[name](value)
        for name, value in flt.item_filters().items()
    ]
    columns = {c.name: c for clause in clauses for c in clause.reads}.values()
    statement = select(items.c.id, *columns).where(
        items.c.kind == kind, items.c.status == INDEXED, *(clause.where for clause in clauses)
    )
    return FilterQuery(statement, tuple(clause.exact for clause in clauses if clause.exact is not None))
