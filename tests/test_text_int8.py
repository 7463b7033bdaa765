"""The int8 text tower (issue 13 item 5): a quantised copy of the text export, accepted at creation
by the fidelity guard's thresholds, opened by `auto` and `int8` searches (and a server), rebuilt
when damaged, and refused (with one note, the fp32 export answering) when the check fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export_kit import cli_program, damages, exported_library, imported, run_program
from indexer import derived, encode, onnx_encode, precision_guard
from indexer.derived import TEXT_ENCODER, TEXT_ENCODER_INT8, Derived, Refused
from indexer.onnx_encode import OnnxTextEncoder
from retrieval.library import Library
from retrieval.search import Result

TEXTS = ("a cat on a sofa", "a dog in the park", "the beach at sunset", "snow on the mountains", "a red car in the city")
QUERIES = ("a dog", "kids playing on the beach at sunset", "東京の夜景", "a " * 90 + "caption past the context length")
# A cold CLI search that prints which ONNX files its sessions opened, and whether torch was imported.
CLI = cli_program(prelude=(
    "import sys, onnxruntime\n"
    "class Recorded(onnxruntime.InferenceSession):\n"
    "    def __init__(self, path, *a, **k):\n"
    "        print('SESSION=' + str(path), file=sys.stderr)\n"
    "        super().__init__(path, *a, **k)\n"
    "onnxruntime.InferenceSession = Recorded\n"
))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model library of photos and texts whose index run exported the text tower and quantised it."""
    return exported_library(tmp_path_factory.mktemp("int8text"), texts=TEXTS)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names of the ONNX sessions opened from now on (exports on, torch text encoder refused)."""
    names: list[str] = []
    real = onnx_encode.session_for

    def recording(path: Path, threads: int = 0) -> object:
        names.append(Path(path).name)
        return real(path, threads)

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("a query text reached the torch encoder")

    monkeypatch.delenv("CLIPDEX_NO_EXPORT", raising=False)
    monkeypatch.setattr(onnx_encode, "session_for", recording)
    monkeypatch.setattr(encode, "encode_texts", refuse)
    return names


def fingerprint(home: Path) -> str:
    with Library.open(home) as lib:
        row = lib.active_model()
    assert row is not None
    return row.fingerprint


def searches(home: Path, precision: str) -> list[list[Result]]:
    with Library.open(home, precision=precision) as lib:
        return [lib.search(q, top=5) for q in QUERIES] + [lib.search(t, top=5, texts=True) for t in TEXTS]


def test_the_index_run_made_an_accepted_int8_copy_that_keeps_the_dynamic_length(home: Path) -> None:
    fp = fingerprint(home)
    found = derived.lookup(home, fp, TEXT_ENCODER_INT8, full_check=True)
    fp32 = derived.lookup(home, fp, TEXT_ENCODER)
    assert isinstance(found, Derived) and isinstance(fp32, Derived)
    assert found.tag.validation["mean_cosine"] >= precision_guard.MEAN_COSINE
    assert found.tag.validation["min_cosine"] >= precision_guard.MIN_COSINE
    assert found.tag.validation["samples"] == 24.0  # 12 captions each alone, then the 12 as one batch
    assert found.tag.info == fp32.tag.info and found.tag.info["trims_padding"] is True
    assert sorted(f.name for f in found.tag.files) == ["text-encoder-int8.onnx", "text-encoder-int8.onnx.data"]
    assert found.tag.versions["quantisation"] == "dynamic int8"
    weights = {f.name: f.size_bytes for f in found.tag.files + fp32.tag.files}
    assert weights["text-encoder-int8.onnx.data"] < weights["text-encoder.onnx.data"] / 3  # int8, not fp32


def test_int8_query_vectors_stay_close_to_fp32_at_any_length(home: Path) -> None:
    fp = fingerprint(home)
    int8, fp32 = (derived.lookup(home, fp, kind) for kind in (TEXT_ENCODER_INT8, TEXT_ENCODER))
    assert isinstance(int8, Derived) and isinstance(fp32, Derived)
    texts = [*QUERIES, *TEXTS]
    a, b = OnnxTextEncoder.open(int8), OnnxTextEncoder.open(fp32)
    assert a.trims_padding and b.trims_padding
    together = (a.encode(texts) * b.encode(texts)).sum(axis=1)  # one batch, cut to the longest text
    alone = np.array([float(a.encode([t])[0] @ b.encode([t])[0]) for t in texts])  # each at its own length
    assert together.min() >= precision_guard.MIN_COSINE and alone.min() >= precision_guard.MIN_COSINE


def test_auto_and_int8_open_the_int8_tower_fp32_and_bf16_the_fp32_export(home: Path, opened: list[str]) -> None:
    want = searches(home, "fp32")
    assert opened == ["text-encoder.onnx"]
    for precision in ("auto", "int8"):
        opened.clear()
        got = searches(home, precision)
        assert opened == ["text-encoder-int8.onnx"], precision
        assert [r[0].id for r in got] == [r[0].id for r in want]  # the same top result for every query
        for results, text in zip(got[len(QUERIES):], TEXTS):
            assert results[0].to_dict()["text"] == text
    opened.clear()
    searches(home, "bf16")  # ONNX has no bf16 path here
    assert opened == ["text-encoder.onnx"]


def test_a_cold_cli_search_uses_the_int8_tower_without_torch(home: Path) -> None:
    runs = {}
    for flags in ((), ("--precision", "fp32")):
        done = run_program(CLI, home, "search", TEXTS[1], "--texts", "--top", "3", "--json", *flags)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert imported(done.stderr) == [], done.stderr
        assert not [ln for ln in lines if "torch" in ln.replace("IMPORTED=", "")], done.stderr  # no fallback note
        runs[flags] = ([Path(ln.removeprefix("SESSION=")).name for ln in lines if ln.startswith("SESSION=")], json.loads(done.stdout))
    assert runs[()][0] == ["text-encoder-int8.onnx"]
    assert runs[("--precision", "fp32")][0] == ["text-encoder.onnx"]
    assert runs[()][1][0]["text"] == runs[("--precision", "fp32")][1][0]["text"] == TEXTS[1]


def test_a_missing_damaged_or_foreign_copy_is_rebuilt_by_the_next_index_run(
    home: Path, opened: list[str]
) -> None:
    fp = fingerprint(home)
    entry = derived.entry_folder(home, fp)
    for damage in damages(entry, "text-encoder-int8"):
        damage()
        assert derived.lookup(home, fp, TEXT_ENCODER_INT8) is None
        opened.clear()
        with Library.open(home) as lib:  # meanwhile auto searches use the fp32 export, silently
            notes: list[str] = []
            lib.notify = notes.append
            lib.search(QUERIES[0], top=3)
        assert opened == ["text-encoder.onnx"] and notes == []
        with Library.open(home) as lib:  # an index run that finds nothing new
            lib.index()
        assert isinstance(derived.lookup(home, fp, TEXT_ENCODER_INT8, full_check=True), Derived), damage.__name__
        opened.clear()
        searches(home, "auto")
        assert opened == ["text-encoder-int8.onnx"]


def test_a_copy_the_check_refuses_is_recorded_and_the_fp32_export_answers_with_one_note(
    home: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fp = fingerprint(home)
    entry = derived.entry_folder(home, fp)
    for path in entry.glob("text-encoder-int8.*"):
        path.unlink()
    want = searches(home, "fp32")
    assert precision_guard.MEAN_COSINE == 0.995
    monkeypatch.setattr(precision_guard, "MEAN_COSINE", 1.01)  # no copy can pass: the real check refuses it
    with Library.open(home) as lib:
        lib.index()
    refused = derived.lookup(home, fp, TEXT_ENCODER_INT8)
    assert isinstance(refused, Refused) and "below 1.01 / 0.98" in refused.reason
    monkeypatch.setattr(precision_guard, "MEAN_COSINE", 0.995)  # recorded: sound thresholds later do not retry it
    opened.clear()
    notes: list[str] = []
    with Library.open(home) as lib:
        lib.notify = notes.append
        got = [lib.search(q, top=5) for q in QUERIES] + [lib.search(t, top=5, texts=True) for t in TEXTS]
    assert opened == ["text-encoder.onnx"]
    assert notes == [f"text queries use the fp32 ONNX text tower: no int8 text tower for model {fp} ({refused.reason})"]
    for g, w in zip(got, want):
        assert [r.id for r in g] == [r.id for r in w] and np.allclose([r.score for r in g], [r.score for r in w], atol=1e-6)
    shutil.rmtree(entry)  # leave the module's library whole for any later test: the next index run rebuilds it
    with Library.open(home) as lib:
        lib.index()
    assert isinstance(derived.lookup(home, fp, TEXT_ENCODER_INT8), Derived)

