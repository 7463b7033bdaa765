"""Property-based fuzzing of what users type and the files they hand in.

- the query parser raises nothing but QueryError, and a term written out as
  `W:KIND:VALUE` parses back to itself;
- the text-file reader raises nothing but InputFileError, and the texts written
  in any supported format read back exactly;
- imported vectors are refused with InputFileError or stored as finite unit rows;
- text for the terminal holds no control or bidi character, and JSON output parses
  back to exactly the values printed.

- the pair-file readers (CSV, TSV, JSONL, folders with sidecar captions) raise
  nothing but InputFileError, and pairs written in each format read back exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import numpy as np
from hypothesis.extra import numpy as hnp

from cli.render import print_json, shown
from indexer.embedding_files import unit_rows
from indexer.texts import read_texts
from indexer.errors import InputFileError, QueryError
from retrieval.pairs import read_pairs
from retrieval.query import Term, glob_for, parse_date, parse_term, parse_terms

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = st.sampled_from(["text", "image", "item"])
ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.text(max_size=60)
TERMISH = st.builds(
    lambda w, k, v: f"{w}{k}{v}",
    st.sampled_from(["", "0:", "1:", "2.5:", ".5:", "1e3:", "-1:", "inf:", "9" * 400 + ":", "00:", "1.:"]),
    st.sampled_from(["", "text:", "image:", "item:", "item: ", "ITEM:", "text"]),
    ANY_TEXT,
)


@FUZZ
@given(raw=ANY_TEXT | TERMISH, allow_files=st.booleans())
@example(raw="item:²", allow_files=False)
@example(raw="item:99999999999999999999999", allow_files=False)
@example(raw="9" * 400 + ":sunset", allow_files=False)
def test_parse_term_raises_only_query_error(raw: str, allow_files: bool) -> None:
    try:
        term = parse_term(raw, allow_files=allow_files)
    except QueryError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert term.kind in ("text", "image", "item")
    assert math.isfinite(term.weight) and term.weight > 0
    if term.kind == "item":
        assert 0 <= int(term.value) < 2**63  # what the catalog can look up
    if term.kind == "text":
        assert term.value.strip()
    if term.kind == "image":
        assert allow_files and os.path.isfile(term.value)


@FUZZ
@given(query=st.none() | ANY_TEXT, add=st.lists(TERMISH, max_size=3), sub=st.lists(TERMISH, max_size=3))
def test_parse_terms_signs_and_raises_only_query_error(query: str | None, add: list[str], sub: list[str]) -> None:
    try:
        terms = parse_terms(query, tuple(add), tuple(sub), allow_files=False)
    except QueryError:
        return
    signs = [t.weight > 0 for t in terms]
    assert signs == [True] * (len(terms) - len(sub)) + [False] * len(sub)


@FUZZ
@given(
    kind=st.sampled_from(["text", "item"]),
    value=ANY_TEXT,
    weight=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
)
def test_a_written_term_parses_back_to_itself(kind: str, value: str, weight: float) -> None:
    if kind == "item":
        value = str(abs(hash(value)) % 10**12)
    assume(kind != "text" or value.strip())
    w = f"{weight:.6f}"
    assert parse_term(f"{w}:{kind}:{value}", allow_files=False) == Term(kind, value, float(w))  # type: ignore[arg-type]
    assert parse_term(f"{kind}:{value}", allow_files=False) == Term(kind, value, 1.0)  # type: ignore[arg-type]


@FUZZ
@given(text=ANY_TEXT)
def test_plain_text_without_a_prefix_is_itself(text: str) -> None:
    assume(text.strip() and not text.startswith(("text:", "image:", "item:")))
    term = parse_term(f"text:{text}", allow_files=False)
    assert term == Term("text", text, 1.0)


@FUZZ
@given(text=ANY_TEXT)
def test_dates_and_globs_raise_only_query_error(text: str) -> None:
    try:
        value = parse_date(text, "--after")
    except QueryError as e:
        assert "--after" in str(e)
    else:
        assert math.isfinite(value)
    assert isinstance(glob_for(text), str)


TEXTS = st.lists(ANY_TEXT.map(str.strip).filter(bool), max_size=8)


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl", ".json", ".TXT"]))
def test_read_texts_raises_only_input_file_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    try:
        out = read_texts(write(tmp_path, "in" + suffix, data))
    except InputFileError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert all(isinstance(t, str) and t == t.strip() and t for t in out.texts)
    assert all(isinstance(n, int) and n >= 1 for n, _ in out.problems)


def _one_line_texts(texts: list[str]) -> list[str]:
    """Texts as a one-per-line file can hold them: split at newlines, blank lines dropped."""
    return [part.strip() for t in texts for part in t.replace("\r", "\n").split("\n") if part.strip()]


@FUZZ
@given(texts=TEXTS)
def test_txt_round_trip(tmp_path: Path, texts: list[str]) -> None:
    path = write(tmp_path, "t.txt", "\n".join(texts).encode("utf-8", "surrogatepass"))
    assume(all(not any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts))  # not valid UTF-8 files
    assert read_texts(path).texts == _one_line_texts(texts)


@FUZZ
@given(texts=TEXTS)
@example(texts=["a\u2028b", "c\x85d", "e\x1cf"])
def test_jsonl_round_trip(tmp_path: Path, texts: list[str]) -> None:
    assume(all(not any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts))
    lines = [json.dumps({"text": t, "n": i}, ensure_ascii=False) for i, t in enumerate(texts)]
    out = read_texts(write(tmp_path, "t.jsonl", "\n".join(lines).encode()))
    assert out.texts == texts and out.problems == []


@FUZZ
@given(texts=TEXTS, delimiter=st.sampled_from([",", "\t"]))
@example(texts=["two\nlines", 'quote " inside', "comma, and\ttab", "a\u2028b"], delimiter=",")
def test_csv_and_tsv_round_trip(tmp_path: Path, texts: list[str], delimiter: str) -> None:
    assume(all(not any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts))
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(["id", "text"])
    w.writerows([[i, t] for i, t in enumerate(texts)])
    name = "t.tsv" if delimiter == "\t" else "t.csv"
    out = read_texts(write(tmp_path, name, buf.getvalue().encode()))
    assert out.texts == texts and out.problems == []


def test_unsupported_and_missing_files_are_input_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="texts come from"):
        read_texts(write(tmp_path, "t.json", b"[]"))
    with pytest.raises(InputFileError, match="does not exist"):
        read_texts(tmp_path / "nope.txt")
    with pytest.raises(InputFileError, match="no 'text' column"):
        read_texts(write(tmp_path, "t.csv", b"caption\nx\n"))


VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1e-310, 1e-45, 3.5e38, 1e200, -1e39])


@FUZZ
@given(
    values=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=VALUES),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_imported_vectors_are_refused_or_stored_as_finite_unit_rows(values: np.ndarray, dtype: type) -> None:
    with np.errstate(over="ignore"):
        vectors = values.astype(dtype)  # huge values become inf in float16 and float32
    items = [f"/x/{n}.jpg" for n in range(len(vectors))]
    try:
        out = unit_rows(items, vectors, "image")
    except InputFileError as e:
        assert str(e).startswith("row ") and "\n" not in str(e)
        return
    assert out.dtype == np.float32 and out.shape == vectors.shape
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out.astype(np.float16)).all()  # fits the catalog's float16 storage


UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@FUZZ
@given(text=st.text())
@example(text="\x1b]52;c;aGk=\x07\u202e\x9b\t\n\udcff")
def test_shown_text_is_one_safe_line_and_json_stays_exact(capsys: pytest.CaptureFixture[str], text: str) -> None:
    out = shown(text)
    assert UNSAFE.search(out) is None
    if UNSAFE.search(text) is None:
        assert out == text
    capsys.readouterr()
    print_json({"path": text, "texts": [text, "ok"]})
    printed = capsys.readouterr().out
    assert UNSAFE.search(printed.replace("\n", "")) is None
    assert json.loads(printed) == {"path": text, "texts": [text, "ok"]}


# -- image–caption pairs ----------------------------------------------------------------------

CAPTION = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Zl", "Zp", "Cc")), min_size=1, max_size=40)
CAPTION = CAPTION.map(str.strip).filter(bool)


@FUZZ
@given(data=st.binary(max_size=300) | ANY_TEXT.map(str.encode), suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
def test_read_pairs_raises_only_input_file_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")  # readers check that images exist; decoding comes later
    path = tmp_path / f"pairs{suffix}"
    path.write_bytes(data)
    try:
        got = read_pairs(path)
    except InputFileError:
        return
    assert all(p.image == tmp_path / "a.png" and p.caption == p.caption.strip() and p.caption for p in got.pairs)
    assert all(p.line >= 1 for p in got.problems)


@FUZZ
@given(rows=st.lists(st.tuples(st.sampled_from(["a.png", "b.jpg", "missing.png"]), CAPTION), max_size=8),
       fmt=st.sampled_from(["csv", "tsv", "jsonl", "folder"]))  # fmt: skip
def test_pairs_written_in_each_format_read_back(tmp_path: Path, rows: list[tuple[str, str]], fmt: str) -> None:
    folder = tmp_path / fmt
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"")
    if fmt == "folder":
        by_image: dict[str, list[str]] = {"a.png": [], "b.jpg": []}
        for image, caption in rows:
            by_image.setdefault(image, []).append(caption)
        for image, captions in by_image.items():
            if image != "missing.png":
                (folder / image).with_suffix(".txt").write_text("".join(c + "\n" for c in captions), encoding="utf-8")
        got = read_pairs(folder)
        expected = sorted((i, c) for i, cs in by_image.items() if i != "missing.png" for c in cs)
        assert sorted((p.image.name, p.caption) for p in got.pairs) == expected and got.problems == []
        return
    path = folder / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows), encoding="utf-8")
    else:
        buf = io.StringIO()
        out = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",")
        out.writerow(["image", "caption"])
        out.writerows(rows)
        path.write_text(buf.getvalue(), encoding="utf-8")
    got = read_pairs(path)
    assert [(p.image.name, p.caption) for p in got.pairs] == [(i, c) for i, c in rows if i != "missing.png"]
    assert [p.reason for p in got.problems] == ["image missing.png does not exist" for i, _ in rows if i == "missing.png"]
