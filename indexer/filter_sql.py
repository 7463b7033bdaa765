"""The catalog's SQL for a `SearchFilter`: one clause builder per item filter.

Part of the catalog: only `indexer.catalog` runs these queries. `CLAUSES` maps each
item field of SearchFilter to the function that builds its clause, so adding a
filter adds one entry (tests/test_filters.py checks that every item field has one).
The clauses are SQLAlchemy Core that SQLite and PostgreSQL both run.

Path globs have no portable SQL form (GLOB is SQLite's alone; regular expressions
differ per backend), so the path clause is a LIKE that every matching path also
matches, and the exact fnmatch test runs in Python on the rows it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Callable

from sqlalchemy import Column, ColumnElement, Row, Select, select

from indexer.filters import SearchFilter
from indexer.items import INDEXED
from indexer.schema import items

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


CLAUSES: dict[str, Callable[[Any], Clause]] = {
    "path_glob": path_clause,
    "after": after_clause,
    "before": before_clause,
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
    clauses = [CLAUSES[name](value) for name, value in flt.item_filters().items()]
    columns = {c.name: c for clause in clauses for c in clause.reads}.values()
    statement = select(items.c.id, *columns).where(
        items.c.kind == kind, items.c.status == INDEXED, *(clause.where for clause in clauses)
    )
    return FilterQuery(statement, tuple(clause.exact for clause in clauses if clause.exact is not None))
