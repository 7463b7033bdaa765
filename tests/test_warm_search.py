"""Warm searches through the exported text tower rank as the torch path does at fp32: in a
Library kept open (as `clipdex serve` keeps one) and over HTTP, with queries whose
token lengths differ, since the export cuts the padding after the longest text."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_kit import exported_library
from indexer import derived, encode
from indexer.derived import TEXT_ENCODER, Derived
from retrieval.library import Library
from retrieval.search import Result
from serverkit import client_for

QUERIES = (
    "a dog",
    "kids playing on the beach at sunset",
    "東京の夜景",
    "a " * 90 + "caption past the context length",
    "?",
)
COMBINED = ("a red car", ("snow on the mountains at dawn, seen from a small wooden hut",), ("x",))  # query, add, sub


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model library of photos and texts whose index run exported the text tower."""
    texts = ["a cat on a sofa", "a dog in the park", "the beach at sunset", "東京", "a " * 80]
    return exported_library(tmp_path_factory.mktemp("warm"), texts=texts)


def torch_searches(home: Path, *searches: tuple[str, dict[str, object]]) -> list[list[Result]]:
    """The torch path at fp32 (exports off), one Library for all the searches."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPDEX_NO_EXPORT", "1")
        with Library.open(home, precision="fp32") as lib:
            return [lib.search(query, top=8, **options) for query, options in searches]  # type: ignore[arg-type]


def assert_same(got: list[dict[str, object]] | list[Result], want: list[Result]) -> None:
    """Same ids in the same order, except where scores are within 1e-4; scores within 1e-4."""
    rows = [g if isinstance(g, dict) else g.to_dict() for g in got]
    assert len(rows) == len(want)
    by_id = {w.id: w.score for w in want}
    for g, w in zip(rows, want):
        assert abs(float(str(g["score"])) - w.score) < 1e-4
        if g["id"] != w.id:
            assert abs(by_id.get(int(str(g["id"])), 9.0) - float(str(g["score"]))) < 1e-4


def refuse_torch_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail any query text that reaches the torch text encoder: the export must answer."""
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("a query text reached the torch encoder")

    monkeypatch.delenv("CLIPDEX_NO_EXPORT", raising=False)
    monkeypatch.setattr(encode, "encode_texts", refuse)


def test_the_export_cuts_padding(home: Path) -> None:
    with Library.open(home) as lib:
        row = lib.active_model()
        assert row is not None
        found = derived.lookup(home, row.fingerprint, TEXT_ENCODER)
    assert isinstance(found, Derived)
    assert found.tag.info["trims_padding"] is True
    assert found.tag.validation["min_cosine"] >= 0.9999


def test_a_warm_library_ranks_as_torch_at_fp32(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    query, add, sub = COMBINED
    *wants, want_texts, want_combined = torch_searches(
        home, *[(q, {}) for q in QUERIES], (QUERIES[1], {"texts": True}),
        (query, {"add": add, "sub": sub}),  # three texts of different lengths, one batch
    )
    refuse_torch_text(monkeypatch)
    with Library.open(home, precision="fp32") as lib:  # the fp32 export (auto: the int8 copy, tests/test_text_int8.py)
        for _ in range(2):  # the second round is warm: the session is open, the query vectors cached
            for q, want in zip(QUERIES, wants):
                assert_same(lib.search(q, top=8), want)
            assert_same(lib.search(QUERIES[1], top=8, texts=True), want_texts)
            assert_same(lib.search(query, add=add, sub=sub, top=8), want_combined)


def test_the_server_answers_with_the_export(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [want] = torch_searches(home, (QUERIES[1], {}))
    refuse_torch_text(monkeypatch)
    with Library.open(home, precision="fp32") as lib:  # a server uses its library's choice of text tower
        with client_for(lib) as client:
            response = client.get("/api/v1/search", params={"q": QUERIES[1], "top": 8})
    assert response.status_code == 200
    assert_same(response.json()["results"], want)
