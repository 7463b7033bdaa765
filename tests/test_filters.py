"""Search filters: one parser for the CLI and the server, and the catalog's SQL against a brute-force reference."""

from __future__ import annotations

import inspect
import itertools
import sqlite3
from dataclasses import dataclass, fields
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.app import app
from cli.search_cmd import search_filter
from indexer.catalog import Catalog, FileRecord, WriteBatch
from indexer.decode import ImageInfo, path_str
from indexer.filter_sql import CLAUSES, like_pattern
from indexer.filters import ITEMS, InvalidFilter, SearchFilter
from indexer.items import IMAGE, TEXT
from retrieval.server.schemas import SearchOptions

FILTER_PARAMS = list(inspect.signature(SearchFilter.parse).parameters)  # path, after, before, min_score


def search_command() -> Any:
    return typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]


def cli_filter(args: list[str]) -> SearchFilter:
    """The filter `clipdex search x ARGS` builds: typer reads the options, then the CLI's parser call."""
    ctx = search_command().make_context("search", ["x", *args])
    return search_filter(**{name: ctx.params[name] for name in FILTER_PARAMS})


def server_filter(params: dict[str, str]) -> SearchFilter:
    """The filter a search route builds from query parameters (strings, as they arrive)."""
    return SearchOptions.model_validate(params).search_filter()


# -- one parser ----------------------------------------------------------------------------------


RAW = [
    {},
    {"path": "2021/*"},
    {"path": "/abs/[!x]*.jpg", "min_score": "0.25"},
    {"after": "2021-06-02", "before": "2021-06-04T12:30"},
    {"path": "trip/*", "after": "2024-07-01T18:30:00+02:00", "before": "2024-08-01", "min_score": "-0.5"},
    {"camera": "canon", "lens": "24-70", "focal": "24..70", "iso": "..800", "near": "48.85,2.29", "within": "2km"},
]


def test_cli_and_server_read_flags_and_lists_the_same() -> None:
    both = SearchFilter(has_gps=True, tags=("red", "circle"))
    assert cli_filter(["--has-gps", "--tag", "red", "--tag", "circle"]) == both
    assert server_filter({"has_gps": "true", "tag": ["red", "circle"]}) == both  # type: ignore[dict-item]


@pytest.mark.parametrize("raw", RAW)
def test_cli_and_server_read_the_same_strings_into_equal_filters(raw: dict[str, str]) -> None:
    args = [arg for name, value in raw.items() for arg in ("--" + name.replace("_", "-"), value)]
    assert cli_filter(args) == server_filter(raw) == SearchFilter.parse(**raw)  # type: ignore[arg-type]


def test_parse_reads_globs_dates_and_scores() -> None:
    flt = SearchFilter.parse(path="2021/*", after="2021-06-02", before="2021-06-04T12:30", min_score="0.25")
    assert flt == SearchFilter(
        path_glob="*/2021/*",
        after=datetime(2021, 6, 2).timestamp(),
        before=datetime(2021, 6, 4, 12, 30).timestamp(),
        min_score=0.25,
    )
    assert SearchFilter.parse(path="", after="", before="", min_score="") == SearchFilter()
    assert SearchFilter.parse(path="~/P/*", min_score=0.0) == SearchFilter(str(Path.home() / "P/*"), min_score=0.0)
    assert flt.item_filters() == {"path_glob": "*/2021/*", "after": flt.after, "before": flt.before}
    assert not SearchFilter(min_score=0.5).narrows_items


DATE_HELP = "an ISO 8601 date (e.g. 2024-07-01 or 2024-07-01T18:30)"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("after", "yesterday", DATE_HELP), ("before", "2021-13-01", DATE_HELP)],
)
def test_a_bad_value_is_named_by_each_interface_its_own_way(name: str, value: str, expected: str) -> None:
    with pytest.raises(InvalidFilter) as cli:
        cli_filter([f"--{name}", value])
    with pytest.raises(InvalidFilter) as server:
        server_filter({name: value})
    assert (cli.value.name, cli.value.value, cli.value.expected) == (f"--{name}", value, expected)
    assert (server.value.name, server.value.value, server.value.expected) == (name, value, expected)
    assert str(cli.value) == f"--{name} {value!r} is not {expected}"
    assert str(server.value) == f"{name} {value!r} is not {expected}"


def test_a_score_must_be_a_number() -> None:
    with pytest.raises(InvalidFilter, match=r"^min_score 'high' is not a number \(scores run from -1 to 1\)$"):
        SearchFilter.parse(min_score="high")
    with pytest.raises(InvalidFilter, match=r"^--min-score 'nan' is not a number"):
        cli_filter(["--min-score", "nan"])  # typer reads it as a float; it would silently drop every result


def test_every_filter_parameter_is_a_cli_option_and_a_server_parameter() -> None:
    """Adding a parameter to SearchFilter.parse without the CLI option or the HTTP parameter fails here."""
    options = {opt for p in search_command().params for opt in p.opts}
    assert FILTER_PARAMS == [
        "path", "after", "before", "min_score", "camera", "lens", "focal", "iso", "near", "within", "has_gps", "tag"]
    assert [name for name in FILTER_PARAMS if "--" + name.replace("_", "-") not in options] == []
    assert [name for name in FILTER_PARAMS if name not in SearchOptions.model_fields] == []


def test_every_item_filter_has_one_sql_clause() -> None:
    assert sorted(CLAUSES) == sorted(f.name for f in fields(SearchFilter) if f.metadata["applies"] == ITEMS)


# -- the catalog's SQL against a brute-force reference ------------------------------------------


@dataclass(frozen=True)
class Photo:
    path: bytes
    taken_at: float | None  # None: the date filters use the mtime
    mtime_s: int
    skipped: bool = False

    @property
    def date_key(self) -> float:
        return self.taken_at if self.taken_at is not None else float(self.mtime_s)


DAY = 86_400
T0 = datetime(2021, 6, 1).timestamp()
NAMES = [
    b"/photos/2021/beach.jpg", b"/photos/2021/Beach.JPG", b"/photos/2022/06/sun.png", b"/photos/2021-old/x.jpg",
    b"/photos/100%/a.jpg", b"/photos/100x/a.jpg", b"/photos/snake_case/b.jpg", b"/photos/snakeXcase/b.jpg",
    b"/photos/back\\slash/c.jpg", b"/photos/[draft]/d.jpg", b"/photos/d/d.jpg", b"/photos/a?b/f.jpg",
    "/photos/ünïcødé/é.jpg".encode(), "/photos/日本/写真.jpg".encode(), b"/photos/bad\xff/e.jpg",
    b"/photos/new\nline.jpg", b"/other/2021/beach.jpg", b"/photos/2021/skipped.jpg",
]
PHOTOS = [
    Photo(name, T0 + (i % 6) * DAY if i % 3 else None, int(T0) + (i % 5) * DAY + 3600, name.endswith(b"skipped.jpg"))
    for i, name in enumerate(NAMES)
]
GLOBS = [
    "*", "*/2021/*", "*/2021/*.jpg", "*.JPG", "*.jpg", "/photos/*", "*/100%/*", "*/100_/*", "*/snake_case/*",
    "*\\slash*", "*/[[]draft]/*", "/photos/[!a-z2]*", "*/[a-c]*", "/photos/????/*", "*/日本/*", "*/bad\ufffd/*",
    "*/ünïcødé/*", "*?b/*", "/photos/2021", "[", "*[", "*/a[?]b/*", "*%*", "*_*", "*\n*", "*/d/*", "/photos/2021/*",
]
WINDOWS = [(None, None), (T0 + DAY, None), (None, T0 + 3 * DAY), (T0 + DAY, T0 + 3 * DAY), (T0 + 3 * DAY, T0)]


@pytest.fixture
def catalog(tmp_path: Path, backend: str | None) -> Iterator[tuple[Catalog, list[int]]]:
    """A real catalog holding PHOTOS (one skipped) and two texts; and the photos' ids, in order."""
    cat = Catalog(backend or f"sqlite:///{tmp_path / 'catalog.db'}")
    records = [
        FileRecord(
            p.path, 1000, p.mtime_s * 10**9, f"{i:064x}", ImageInfo(4, 3, p.taken_at, None, 1),
            reason="not an image" if p.skipped else None,
        )
        for i, p in enumerate(PHOTOS)
    ]
    ids = cat.write(WriteBatch(records=records))
    cat.add_texts(["a beach", "/photos/2021/beach.jpg"])
    yield cat, ids
    cat.close()


def reference(ids: list[int], flt: SearchFilter) -> list[int]:
    """The ids of the photos that pass `flt`, by checking each one in Python."""
    return sorted(
        i for i, p in zip(ids, PHOTOS)
        if not p.skipped
        and (flt.path_glob is None or fnmatchcase(path_str(p.path), flt.path_glob))
        and (flt.after is None or p.date_key >= flt.after)
        and (flt.before is None or p.date_key < flt.before)
    )  # fmt: skip


def test_filter_ids_match_a_brute_force_reference(catalog: tuple[Catalog, list[int]]) -> None:
    cat, ids = catalog
    checked = 0
    for glob, (after, before) in itertools.product([None, *GLOBS], WINDOWS):
        flt = SearchFilter(path_glob=glob, after=after, before=before)
        assert sorted(cat.filter_ids(IMAGE, flt).tolist()) == reference(ids, flt), flt
        checked += 1
    assert checked == 28 * 5
    # The reference is not vacuous: each glob below picks exactly these files.
    picked = {g: sorted(Path(path_str(PHOTOS[ids.index(i)].path)).name for i in reference(ids, SearchFilter(g)))
              for g in ("*/100%/*", "*/snake_case/*", "*.JPG", "/photos/[!a-z2]*", "*/a[?]b/*")}
    assert picked == {
        "*/100%/*": ["a.jpg"], "*/snake_case/*": ["b.jpg"], "*.JPG": ["Beach.JPG"],
        "/photos/[!a-z2]*": ["a.jpg", "a.jpg", "d.jpg", "é.jpg", "写真.jpg"],
        "*/a[?]b/*": ["f.jpg"],
    }  # fmt: skip


def test_texts_are_never_images_and_skipped_files_never_pass(catalog: tuple[Catalog, list[int]]) -> None:
    cat, ids = catalog
    assert cat.filter_ids(TEXT, SearchFilter(after=0.0)).tolist() == []  # texts have no date
    everything = sorted(cat.filter_ids(IMAGE, SearchFilter(path_glob="*")).tolist())
    assert everything == sorted(i for i, p in zip(ids, PHOTOS) if not p.skipped)
    assert len(everything) == len(PHOTOS) - 1


GLOB_CHARS = st.sampled_from(list("ab/%_\\*?[]!-") + ["é"])


@settings(max_examples=400, deadline=None)
@given(glob=st.text(GLOB_CHARS, max_size=8), path=st.text(GLOB_CHARS, max_size=8))
def test_the_like_clause_keeps_every_path_the_glob_matches(glob: str, path: str) -> None:
    """The SQL half of a path filter may only narrow: LIKE (case-sensitive, as on PostgreSQL) never drops a match."""
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA case_sensitive_like = ON")
    (kept,) = db.execute("SELECT ? LIKE ? ESCAPE '\\'", (path, like_pattern(glob))).fetchone()
    db.close()
    if fnmatchcase(path, glob):
        assert kept == 1, like_pattern(glob)


def test_like_patterns() -> None:
    assert like_pattern("*/2021/*.jpg") == "%/2021/%.jpg"
    assert like_pattern("a**?b") == "a%_b"
    assert like_pattern("100%_\\*") == "100\\%\\_\\\\%"
    assert like_pattern("/p/[!d]x*") == "/p/%"
