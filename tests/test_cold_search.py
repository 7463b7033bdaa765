"""A text search without torch: the ONNX text tower on the search path, against the torch path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY
from export_kit import cli_program, damages, exported_library, imported, run_program
from indexer import derived
from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, Built, DerivedRejected
from retrieval.library import Library
from retrieval.search import ImageResult

CLI = cli_program()  # the CLI in a fresh interpreter, reporting whether it imported torch or open_clip
QUERIES = ("a dog", "kids playing on the beach at sunset", "東京の夜景")


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    done = run_program(CLI, home, *args)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model library whose index run exported the text tower."""
    return exported_library(tmp_path_factory.mktemp("cold"), photos=10)


def torch_results(home: Path, query: str, top: int = 5) -> list[ImageResult]:
    """The torch path at fp32 (exports off)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPDEX_NO_EXPORT", "1")
        with Library.open(home, precision="fp32") as lib:
            return [r for r in lib.search(query, top=top) if isinstance(r, ImageResult)]


def assert_same(got: list[dict[str, object]], want: list[ImageResult]) -> None:
    assert [g["path"] for g in got] == [w.path for w in want] or _ties_only(got, want)
    for g, w in zip(got, want):
        assert abs(float(str(g["score"])) - w.score) < 1e-4


def _ties_only(got: list[dict[str, object]], want: list[ImageResult]) -> bool:
    """Ids may only swap where their scores are within 1e-4."""
    by_id = {w.id: w.score for w in want}
    return [g["id"] for g in got if abs(float(str(g["score"])) - by_id.get(int(str(g["id"])), 9)) > 1e-4] == []


def test_index_exported_the_text_tower(library: Path) -> None:
    with Library.open(library) as lib:
        active = lib.active_model()
        assert active is not None
        assert isinstance(derived.lookup(library, active.fingerprint, TEXT_ENCODER), derived.Derived)


def test_a_text_search_imports_neither_torch_nor_open_clip_and_ranks_as_torch_does(library: Path) -> None:
    for query in QUERIES:
        code, out, err = cli(library, "search", query, "--top", "5", "--json", "--precision", "fp32")  # auto: int8 (test_text_int8)
        assert code == 0, err
        assert imported(err) == []
        assert "torch" not in err.replace("IMPORTED=", "")  # no fallback note
        assert_same(json.loads(out), torch_results(library, query))


def test_item_queries_status_and_help_import_neither(library: Path) -> None:
    with Library.open(library) as lib:
        first = lib.search("item:1", top=3)
    code, out, err = cli(library, "search", "item:1", "--top", "3", "--json")
    assert code == 0, err
    assert imported(err) == []
    assert [(r["id"], round(float(r["score"]), 5)) for r in json.loads(out)] == [(r.id, round(r.score, 5)) for r in first]
    for args in (["--help"], ["status"]):
        code, out, err = cli(library, *args)
        assert code == 0, err
        assert imported(err) == []


def test_a_photo_query_imports_neither_once_the_image_tower_is_exported(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIPDEX_NO_EXPORT")
    photo = str(library.parent / "photos" / "p3.jpg")
    with Library.open(library, precision="fp32") as lib:  # the torch path, which exports the image tower
        active = lib.active_model()
        want = [r for r in lib.search(photo, top=5) if isinstance(r, ImageResult)]
    assert active is not None
    assert isinstance(derived.lookup(library, active.fingerprint, IMAGE_ENCODER), derived.Derived)
    code, out, err = cli(library, "search", photo, "--top", "5", "--json")
    assert code == 0, err
    assert imported(err) == []
    assert "torch" not in err.replace("IMPORTED=", "")
    assert_same(json.loads(out), want)
    assert json.loads(out)[0]["path"] == photo


def test_a_missing_damaged_or_foreign_export_is_rebuilt_by_the_next_search(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIPDEX_NO_EXPORT")
    with Library.open(library) as lib:
        active = lib.active_model()
    assert active is not None
    fp = active.fingerprint
    want = torch_results(library, "a dog")
    entry = derived.entry_folder(library, fp)
    for damage in damages(entry, "text-encoder"):
        damage()
        assert derived.lookup(library, fp, TEXT_ENCODER) is None
        with Library.open(library, precision="fp32") as lib:  # the torch path, which exports again
            got = lib.search("a dog", top=5)
        assert_same([r.to_dict() for r in got], want)
        assert isinstance(derived.lookup(library, fp, TEXT_ENCODER, full_check=True), derived.Derived)
        code, out, err = cli(library, "search", "a dog", "--top", "5", "--json", "--precision", "fp32")
        assert imported(err) == [] and code == 0
        assert_same(json.loads(out), want)


def test_a_refused_export_falls_back_to_torch_with_one_note(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPDEX_NO_EXPORT")
    home = Path(os.environ["CLIPDEX_HOME"])
    with Library.open(home) as lib:
        lib.import_embeddings([str(photos / "trip" / "beach0.jpg")], np.ones((1, 128), np.float32), model=TINY)
        active = lib.active_model()
    assert active is not None

    def refuse(folder: Path) -> Built:
        raise DerivedRejected(TEXT_ENCODER.name, active.fingerprint, "tokenizer not supported")

    with pytest.raises(DerivedRejected):
        derived.get_or_build(home, active.fingerprint, TEXT_ENCODER, refuse, lambda folder: {})
    result = CliRunner().invoke(app, ["search", "a dog", "--add", "a cat", "--precision", "fp32"])
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "no ONNX text tower" in line]
    assert notes == [f"text queries use torch: no ONNX text tower for model {active.fingerprint} (tokenizer not supported)"]
    assert result.stdout.count("beach0.jpg") == 1


def test_plain_ascii_queries_are_cleaned_as_ftfy_cleans_them() -> None:
    """The tokenizer skips ftfy (~9 MB) for printable ASCII without `&`, which ftfy and html.unescape leave alone."""
    import html
    import random

    import ftfy

    from indexer.tokenizer import _basic_clean

    rng = random.Random(13)
    printable = [chr(c) for c in range(32, 127)] + ["\t", "\x1b", "é", "’"]
    texts = ["".join(rng.choice(printable) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    for text in [*texts, "fish &amp; chips", "  a dog  ", "x\x1b[31m red", "caf\u00e9"]:
        assert _basic_clean(text) == html.unescape(html.unescape(ftfy.fix_text(text))).strip(), repr(text)
