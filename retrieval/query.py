"""Query terms: `[W:][text:|image:|item:]TERM`, combined by weighted arithmetic.

A term naming an existing file is an image; `text:`, `image:` and `item:` force
the kind and end parsing, so `text:12:30 train` is the text "12:30 train".
Filters live in `indexer.filters` (the catalog builds SQL from them); they are
re-exported here, where the query's other public names are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal, Sequence

from indexer.errors import QueryError, QueryTooLarge
from indexer.filters import InvalidFilter, SearchFilter, glob_for, parse_date  # noqa: F401 (public names)

TermKind = Literal["text", "image", "item"]
MAX_WEIGHT = 1_000_000.0  # weights are relative; a larger one overflows float32 sums into inf and NaN
MAX_TERMS = 16  # per query, the main term plus added and subtracted ones (the HTTP server's limit)
MAX_TERM_CHARS = 300  # a text encoder reads 77 tokens, about 300 characters of English
_WEIGHT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.*)$", re.DOTALL)
_PREFIXES: tuple[TermKind, ...] = ("text", "image", "item")


@dataclass(frozen=True)
class Term:
    kind: TermKind
    value: str  # the text, the image path, or the item id
    weight: float = 1.0  # negative for a subtracted term


def parse_term(raw: str, *, allow_files: bool = True, force: TermKind | None = None) -> Term:
    """Parse one term; raise QueryError for an empty term or a weight not in (0, MAX_WEIGHT].

    With `allow_files=False` (the HTTP server) no file is looked at and `image:`
    terms are refused.
    """
    if force is not None:
        return _checked(Term(force, raw), allow_files)
    weight = 1.0
    body = raw
    if not _forced_kind(body) and not (allow_files and os.path.isfile(body)):
        m = _WEIGHT.match(body)
        if m:
            weight = float(m.group(1))
            if not 0 < weight:
                raise QueryError(f"weight in {raw!r} must be a positive number")
            if not weight <= MAX_WEIGHT:  # 300 nines: finite, but the weighted sum overflows
                why = f"is over {MAX_WEIGHT:,.0f}; weights are relative, so scale them all down"
                raise QueryError(f"weight in {_brief(raw)!r} {why}")
            body = m.group(2)
    kind = _forced_kind(body)
    if kind is not None:
        return _checked(Term(kind, body[len(kind) + 1 :], weight), allow_files)
    if allow_files and os.path.isfile(body):
        return Term("image", body, weight)
    return _checked(Term("text", body, weight), allow_files)


def _forced_kind(body: str) -> TermKind | None:
    for kind in _PREFIXES:
        if body.startswith(kind + ":"):
            return kind
    return None


def _checked(term: Term, allow_files: bool) -> Term:
    if term.kind == "text" and not term.value.strip():
        raise QueryError("empty query text")
    if term.kind == "image":
        if not allow_files:
            raise QueryError("image paths are not accepted here; upload the image or use item:ID")
        if not os.path.isfile(term.value):
            raise QueryError(f"image {_shown(term.value)} does not exist")
    # isdecimal, not isdigit: "²" is a digit that int() refuses. Ids are SQL integers.
    if term.kind == "item" and not (term.value.strip().isdecimal() and int(term.value) < 2**63):
        raise QueryError(f"item:{_shown(term.value)} is not an item id (item:ID with a whole number)")
    return term


def _shown(value: str) -> str:
    """A user's value as it can appear in a one-line message."""
    return value if value.isprintable() else repr(value)


def _brief(value: str, chars: int = 40) -> str:
    return value if len(value) <= chars else value[: chars - 1] + "…"


def check_term_limits(terms: Sequence[str], max_terms: int = MAX_TERMS, max_chars: int = MAX_TERM_CHARS) -> None:
    """Raise QueryTooLarge for more than `max_terms` terms, or a term of more than `max_chars` characters.

    Each text term costs an encoder pass, so a server bounds them before any work.
    """
    if len(terms) > max_terms:
        why = f"at most {max_terms} are allowed (q, add and sub together)"
        raise QueryTooLarge(f"the query has {len(terms)} terms; {why}")
    for raw in terms:
        if len(raw) > max_chars:
            raise QueryTooLarge(
                f"the term {_brief(raw)!r} is {len(raw):,} characters long; at most {max_chars} are allowed"
            )


def parse_terms(
    query: str | None,
    add: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    *,
    force_image: bool = False,
    allow_files: bool = True,
) -> list[Term]:
    """The main query (if any) plus added and subtracted terms, as signed weighted terms."""
    terms = []
    if query is not None:
        terms.append(parse_term(query, allow_files=allow_files, force="image" if force_image else None))
    terms += [parse_term(t, allow_files=allow_files) for t in add]
    terms += [negated(parse_term(t, allow_files=allow_files)) for t in sub]
    return terms


def negated(term: Term) -> Term:
    return Term(term.kind, term.value, -term.weight)
