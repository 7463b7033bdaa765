"""The fidelity guard: a reduced precision is measured on the library's first images before it is used,
its verdict is recorded per model and precision, and the int8 image encoder is a derived export."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from indexer import failpoints, precision_guard
from indexer.derived import IMAGE_ENCODER_INT8, Derived, entry_folder, lookup
from indexer.items import PrecisionCheck
from indexer.models import load_encoder
from indexer.quantised_export import image_encoder_int8
from retrieval.library import Library

from conftest import TINY, make_photo

FP = "clipdex-tiny@b308732de893a5d5f8bd"
OTHER = "clipdex-tiny@00000000000000000000"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(12 photos and a non-image, one more photo kept aside, every photo's fp32 vector by relative path)."""
    base = tmp_path_factory.mktemp("corpus")
    root = base / "photos"
    for i in range(12):
        make_photo(root / ("trip" if i < 8 else "home") / f"p{i}.jpg", seed=i)
    (root / "home" / "broken.jpg").write_bytes(b"this is not a jpeg")
    extra = make_photo(base / "extra" / "one.jpg", seed=99)
    reference = base / "fp32-root"
    shutil.copytree(root, reference)
    shutil.copy(extra, reference / "one.jpg")
    with Library.open(base / "fp32", precision="fp32") as lib:
        lib.index([reference], model=TINY)
    return root, extra, vectors(base / "fp32", reference)


def photos_of(corpus: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    shutil.copytree(corpus[0], root)
    return root


def add_extra(corpus: tuple[Path, Path, dict[str, np.ndarray]], root: Path) -> None:
    shutil.copy(corpus[1], root / "one.jpg")


@pytest.fixture(scope="module")
def built_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library home holding clipdex-tiny's image export and its int8 copy, built once for the module."""
    home = tmp_path_factory.mktemp("exports")
    image_encoder_int8(load_encoder(TINY, "cpu", "fp32"), home)
    return home


def with_exports(home: Path, built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy the built exports into `home` (a copy costs a hash, not a build) and turn exports on."""
    shutil.copytree(built / "derived", home / "derived")
    monkeypatch.delenv("CLIPDEX_NO_EXPORT")


def vectors(home: Path, root: Path) -> dict[str, np.ndarray]:
    """The library's image vectors by path relative to `root`."""
    with Library.open(home) as lib:
        row = lib.catalog.model_by_fingerprint(FP)
        assert row is not None
        ids, vecs = lib.catalog.vectors(row.id, "image")
        return {os.path.relpath(lib.item(int(i)).path, root): v for i, v in zip(ids, vecs)}  # type: ignore[union-attr,type-var]


def index(home: Path, root: Path, precision: str) -> tuple[list[PrecisionCheck], list[str]]:
    notes: list[str] = []
    with Library.open(home, precision=precision) as lib:
        lib.notify = notes.append
        report = lib.index([root], model=TINY)
        assert report.encoded > 0
        return lib.catalog.precision_checks(), notes


Corpus = tuple[Path, Path, dict[str, np.ndarray]]


def test_bf16_is_accepted_on_the_first_images_recorded_once_and_shown_by_status(
    tmp_path: Path, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})  # auto: bf16
    root = photos_of(corpus, tmp_path)
    checks, notes = index(tmp_path / "lib", root, "auto")
    # 12 photos decode (fewer than GUARD_IMAGES: all of them are compared)
    assert checks == [PrecisionCheck(FP, "bf16", True, ANY, ANY, 12, ANY, None)]
    assert checks[0].mean_cosine >= precision_guard.MEAN_COSINE and checks[0].min_cosine >= precision_guard.MIN_COSINE
    assert [n for n in notes if "refused" in n] == []
    add_extra(corpus, root)
    again, _ = index(tmp_path / "lib", root, "auto")
    assert again == checks  # the verdict stands: not measured again

    result = CliRunner().invoke(app, ["status", "--json", "--library", str(tmp_path / "lib")])
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["models"][0]
    assert model["precision"] == "bf16"
    assert model["precision_checks"] == [
        {"precision": "bf16", "accepted": True, "mean_cosine": ANY, "min_cosine": ANY, "images": 12, "seconds": ANY, "reason": None}
    ]
    text = CliRunner().invoke(app, ["status", "--library", str(tmp_path / "lib")]).stdout
    assert "      images encoded at bf16" in text.splitlines()
    assert "      guard bf16: accepted, cosine to fp32 mean " in text


def test_a_perturbed_fast_path_is_refused_and_fp32_used(tmp_path: Path, corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})  # auto: bf16
    root = photos_of(corpus, tmp_path)
    failpoints.arm(failpoints.FAST_PATH_NOISE)
    try:
        checks, notes = index(tmp_path / "lib", root, "auto")
        add_extra(corpus, root)
        index(tmp_path / "lib", root, "auto")  # after the refusal: fp32 without measuring again
    finally:
        failpoints.disarm()
    assert checks == [PrecisionCheck(FP, "bf16", False, ANY, ANY, 12, ANY, ANY)]
    assert checks[0].min_cosine < precision_guard.MIN_COSINE
    assert [n for n in notes if "refused" in n] == [
        f"clipdex-tiny: bf16 image encoding refused on this library's first 12 images ({checks[0].reason}); encoding at fp32"
    ]
    got, expected = vectors(tmp_path / "lib", root), corpus[2]
    assert sorted(got) == sorted(expected) and len(got) == 13
    for path, v in expected.items():
        np.testing.assert_array_equal(got[path], v)  # every vector, the first 12 and the later one, is fp32's
    model = json.loads(CliRunner().invoke(app, ["status", "--json", "--library", str(tmp_path / "lib")]).stdout)["models"][0]
    assert (model["precision"], model["precision_checks"][0]["accepted"]) == ("fp32", False)


def test_int8_encodes_with_the_quantised_export_once_accepted(
    tmp_path: Path, corpus: Corpus, built_exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "lib"
    home.mkdir()
    with_exports(home, built_exports, monkeypatch)
    root = photos_of(corpus, tmp_path)
    checks, _ = index(home, root, "int8")
    assert checks == [PrecisionCheck(FP, "int8", True, ANY, ANY, 12, ANY, None)]
    add_extra(corpus, root)
    index(home, root, "int8")  # encoded by the int8 file now
    got, expected = vectors(home, root), corpus[2]
    assert not np.array_equal(got["one.jpg"], expected["one.jpg"])  # not fp32's vector ...
    assert float(got["one.jpg"] @ expected["one.jpg"]) > 0.99  # ... but close to it
    for path in expected:
        if path != "one.jpg":
            np.testing.assert_array_equal(got[path], expected[path])  # the guard's images keep fp32 vectors


def test_an_int8_export_is_rebuilt_when_deleted_truncated_or_another_models(
    tmp_path: Path, built_exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "lib"
    home.mkdir()
    with_exports(home, built_exports, monkeypatch)
    encoder = load_encoder(TINY, "cpu", "fp32")
    first = lookup(home, FP, IMAGE_ENCODER_INT8)
    assert isinstance(first, Derived) and first.tag.validation["min_cosine"] >= 0.95
    content = first.path.read_bytes()

    with open(first.path, "r+b") as f:  # truncated
        f.truncate(len(content) // 2)
    assert lookup(home, FP, IMAGE_ENCODER_INT8) is None
    assert image_encoder_int8(encoder, home).path.read_bytes() == content  # rebuilt, the same bytes

    first.path.unlink()  # deleted
    assert lookup(home, FP, IMAGE_ENCODER_INT8) is None
    rebuilt = image_encoder_int8(encoder, home)
    assert rebuilt.path.stat().st_size == len(content)
    assert isinstance(lookup(home, FP, IMAGE_ENCODER_INT8, full_check=True), Derived)

    # Another model's folder holding this one's files is not that model's export.
    other = entry_folder(home, OTHER)
    shutil.copytree(entry_folder(home, FP), other)
    assert lookup(home, OTHER, IMAGE_ENCODER_INT8) is None
    assert os.path.exists(other / IMAGE_ENCODER_INT8.filename)


def test_auto_tries_int8_then_bf16_where_torch_computes_bf16_natively() -> None:
    bf16_cpu = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert precision_guard.auto_cpu_candidates(bf16_cpu, {}) == ("int8", "bf16")
    assert precision_guard.auto_cpu_precision(bf16_cpu, {}) == "int8"
    assert precision_guard.auto_cpu_candidates({"avx2", "avx512_bf16", "amx_bf16"}, {}) == ("bf16", "int8")
    assert precision_guard.auto_cpu_candidates({"avx2", "fma"}, {}) == ("int8",)
    capped = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # benchmarks' --avx2: bf16 is emulated
    assert precision_guard.auto_cpu_candidates(bf16_cpu, capped) == ("int8",)
    assert precision_guard.auto_cpu_candidates(bf16_cpu, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}) == ("int8", "bf16")


def test_auto_measures_bf16_next_when_int8_is_refused(
    tmp_path: Path, corpus: Corpus, built_exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})  # auto: int8, then bf16
    home = tmp_path / "lib"
    home.mkdir()
    with_exports(home, built_exports, monkeypatch)
    root = photos_of(corpus, tmp_path)
    failpoints.arm(failpoints.INT8_PATH_NOISE)
    try:
        first, notes = index(home, root, "auto")  # int8 refused on the 12 photos
        add_extra(corpus, root)
        second, _ = index(home, root, "auto")  # bf16 measured on the next photo, accepted
        make_photo(root / "later.jpg", seed=200)
        third, later = index(home, root, "auto")  # bf16 from now on, measured no more
    finally:
        failpoints.disarm()
    assert first == [PrecisionCheck(FP, "int8", False, ANY, ANY, 12, ANY, ANY)]
    assert [n for n in notes if "refused" in n] == [
        f"clipdex-tiny: int8 image encoding refused on this library's first 12 images ({first[0].reason}); measuring bf16 next"
    ]
    assert second == third == [PrecisionCheck(FP, "bf16", True, ANY, ANY, 1, ANY, None), *first]  # the catalog's order
    assert [n for n in later if "refused" in n] == []
    got, expected = vectors(home, root), corpus[2]
    for path, v in expected.items():
        np.testing.assert_array_equal(got[path], v)  # the photos the guard measured keep fp32's vectors
    model = json.loads(CliRunner().invoke(app, ["status", "--json", "--library", str(home)]).stdout)["models"][0]
    assert model["precision"] == "bf16"
    assert [(c["precision"], c["accepted"]) for c in model["precision_checks"]] == [("bf16", True), ("int8", False)]


def test_the_perturbing_failpoint_is_a_known_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.ENV, failpoints.FAST_PATH_NOISE)
    failpoints.disarm()  # read the variable again
    try:
        assert failpoints.perturbs(failpoints.FAST_PATH_NOISE)
        failpoints.hit(failpoints.CATALOG_MID_BATCH)  # another point: nothing happens
    finally:
        monkeypatch.delenv(failpoints.ENV)
        failpoints.disarm()
    assert not failpoints.perturbs(failpoints.FAST_PATH_NOISE)


def test_texts_stay_bf16_at_auto_where_images_go_to_int8_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer.encode import encode_texts

    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})  # auto: int8, then bf16
    auto = load_encoder(TINY, "cpu", "auto")
    named = load_encoder(TINY, "cpu", "int8")
    bf16 = load_encoder(TINY, "cpu", "bf16")
    fp32 = load_encoder(TINY, "cpu", "fp32")
    assert (auto.precision, auto.text_bf16, named.text_bf16) == ("int8", True, False)
    texts = ["a red circle on a white background", "two blue squares"]
    np.testing.assert_array_equal(encode_texts(auto, texts), encode_texts(bf16, texts))  # as before int8 went first
    np.testing.assert_array_equal(encode_texts(named, texts), encode_texts(fp32, texts))  # --precision int8: fp32 texts
    monkeypatch.setattr(precision_guard, "cpu_flags", lambda: {"avx2", "fma"})  # no native bf16: fp32 texts at auto
    assert load_encoder(TINY, "cpu", "auto").text_bf16 is False
