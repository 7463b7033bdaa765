"""Search filters: the `SearchFilter` value object and its one parser from what a person typed.

The CLI and the HTTP server both build filters with `SearchFilter.parse`; the
catalog builds its SQL from the object (`indexer.filter_sql`), and ranking applies
the score filter. A filter's field says, in its metadata, which of the two applies it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from datetime import datetime

from indexer.errors import QueryError

ITEMS = "items"  # narrows the items ranked: the catalog's SQL applies it (indexer.filter_sql)
SCORES = "scores"  # applies to the ranked results' scores
DATE_FORMAT = "an ISO 8601 date (e.g. 2024-07-01 or 2024-07-01T18:30)"


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

    @classmethod
    def parse(
        cls,
        *,
        path: str | None = None,
        after: str | None = None,
        before: str | None = None,
        min_score: str | float | None = None,
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


def _parse_score(value: str | float, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if math.isnan(score):
        raise InvalidFilter(name, str(value), "a number (scores run from -1 to 1)")
    return score
