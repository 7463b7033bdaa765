"""Search: self-retrieval, exact ranking, arithmetic, filters, texts, model isolation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, brute_force, exif_with, make_photo
from indexer.decode import DecodedImage, decode_image
from indexer.encode import encode_images, encode_texts
from indexer.errors import NoVectors, QueryError
from retrieval.library import Library
from indexer.models import ModelSpec
from retrieval.query import SearchFilter, Term, glob_for, parse_date, parse_term
from retrieval.search import ImageResult


@pytest.fixture
def indexed(library: Library, photos: Path) -> Library:
    library.index([photos], model=TINY)
    return library


def text_vector(lib: Library, text: str) -> np.ndarray:
    return encode_texts(lib.encoder(TINY), [text])[0]


def test_every_indexed_image_finds_itself_first(indexed: Library, photos: Path) -> None:
    for path in sorted(photos.rglob("*")):
        if path.suffix in (".jpg", ".png") and path.name != "broken.jpg":
            (top,) = indexed.search(str(path), top=1)
            assert isinstance(top, ImageResult)
            assert top.path == str(path)
            assert top.score > 0.999


def test_text_ranking_equals_brute_force_over_stored_vectors(indexed: Library) -> None:
    results = indexed.search("a sunny beach", top=12)
    expected = brute_force(indexed, text_vector(indexed, "a sunny beach"))
    assert [r.id for r in results] == [i for i, _ in expected]
    np.testing.assert_allclose([r.score for r in results], [s for _, s in expected], rtol=0, atol=1e-5)


def test_weighted_arithmetic_ranks_the_normalised_weighted_sum(indexed: Library, photos: Path) -> None:
    enc = indexed.encoder(TINY)
    a, b, c = encode_texts(enc, ["beach", "sunset", "people"])
    img = indexed.search(str(photos / "trip" / "beach4.jpg"), top=1)[0]
    model = indexed.active_model()
    assert model is not None
    v_img = indexed.catalog.vectors(model.id, "image", [img.id])[1][0]
    combined = 2 * a + 0.5 * b - c + v_img
    combined /= np.linalg.norm(combined)
    results = indexed.search("2:beach", add=["0.5:sunset", f"item:{img.id}"], sub=["people"], top=12)
    assert [r.id for r in results] == [i for i, _ in brute_force(indexed, combined)]


def test_path_filter_applies_before_ranking_and_still_returns_k(indexed: Library, photos: Path) -> None:
    results = indexed.search("a cat", top=3, filters=SearchFilter.parse(path="trip/*"))
    assert len(results) == 3
    assert all("/trip/" in r.path for r in results if isinstance(r, ImageResult))
    allowed = {i for i, _ in brute_force(indexed, text_vector(indexed, "a cat")) if "/trip/" in indexed.item(i).path}  # type: ignore[union-attr,operator]
    ranked = [i for i, _ in brute_force(indexed, text_vector(indexed, "a cat")) if i in allowed]
    assert [r.id for r in results] == ranked[:3]


def test_date_filters_use_exif_time_with_inclusive_after_and_exclusive_before(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "dated"
    days = ["2021:06:01 09:00:00", "2021:06:02 09:00:00", "2021:06:03 09:00:00", "2021:06:04 09:00:00"]
    for n, day in enumerate(days):
        make_photo(root / f"d{n}.jpg", seed=20 + n, exif=exif_with(taken=day))
    library.index([root], model=TINY)
    window = SearchFilter.parse(after="2021-06-02T09:00:00", before="2021-06-04")
    names = sorted(Path(r.path).name for r in library.search("x", top=10, filters=window) if isinstance(r, ImageResult))
    assert names == ["d1.jpg", "d2.jpg"]
    by_date = library.search("x", top=4, sort="date")
    assert [Path(r.path).name for r in by_date if isinstance(r, ImageResult)] == ["d3.jpg", "d2.jpg", "d1.jpg", "d0.jpg"]
    first = by_date[-1]
    assert isinstance(first, ImageResult)
    assert first.taken_at == datetime(2021, 6, 1, 9, 0).astimezone().isoformat()


def test_min_score_drops_weaker_results(indexed: Library) -> None:
    expected = brute_force(indexed, text_vector(indexed, "a beach"))
    # Halfway between the 5th and 6th scores, so float rounding (FAISS vs numpy) cannot move an item across it.
    cut = (expected[4][1] + expected[5][1]) / 2
    results = indexed.search("a beach", top=10, filters=SearchFilter(min_score=cut))
    assert [r.id for r in results] == [i for i, _ in expected[:5]]


def test_texts_are_searched_by_image_and_by_text(indexed: Library, photos: Path, tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog on a beach\na red square\n\nsunset over the sea\na red square\n")
    report = indexed.add_texts(captions)
    assert (report.added, report.duplicates, report.encoded) == (3, 1, 3)
    query = photos / "trip" / "beach0.jpg"
    results = indexed.search(str(query), texts=True, top=3)
    enc = indexed.encoder(TINY)
    decoded = decode_image(str(query), enc.input_spec)
    assert isinstance(decoded, DecodedImage)
    own = encode_images(enc, decoded.pixels[None])[0]
    assert [r.id for r in results] == [i for i, _ in brute_force(indexed, own, kind="text")]
    assert {r.to_dict()["text"] for r in results} == {"a dog on a beach", "a red square", "sunset over the sea"}
    t2t = indexed.search("a red square", texts=True, top=1)
    assert t2t[0].to_dict() == {"id": t2t[0].id, "text": "a red square", "score": pytest.approx(1.0, abs=1e-3)}


def test_filters_on_texts_are_refused_not_dropped(indexed: Library) -> None:
    indexed.add_texts(["hello"])
    with pytest.raises(QueryError, match="apply to images"):
        indexed.search("x", texts=True, filters=SearchFilter(path_glob="*"))


def test_a_second_model_has_its_own_vectors(indexed: Library, photos: Path, tmp_path: Path) -> None:
    other_weights = tmp_path / "other.safetensors"
    model = indexed.encoder(TINY).model
    with torch.no_grad():
        state = {k: v.clone() + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}
    save_file(state, str(other_weights))
    other = ModelSpec.parse("clipdex-tiny", other_weights)
    with pytest.raises(NoVectors) as no_vectors:
        indexed.search("beach", model=other)
    assert no_vectors.value.model == other  # the CLI words it as a `clipdex index --model` command
    report = indexed.index(model=other)
    assert report.encoded == 12  # every image, once, for the new model only
    rows = {m["fingerprint"]: m for m in indexed.status().models}
    assert [m["images"] for m in rows.values()] == [12, 12]
    tiny_row, other_row = indexed.catalog.list_models()
    for spec, row in ((TINY, tiny_row), (other, other_row)):
        q = encode_texts(indexed.encoder(spec), ["beach"])[0]
        ids, vecs = indexed.catalog.vectors(row.id, "image")
        order = [int(ids[i]) for i in np.lexsort((ids, -(vecs @ q)))]
        assert [r.id for r in indexed.search("beach", model=spec, top=12)] == order


def test_search_on_an_empty_library_says_what_to_do(library: Library) -> None:
    with pytest.raises(NoVectors) as no_vectors:
        library.search("anything")
    assert (no_vectors.value.model, str(no_vectors.value)) == (None, "the library is empty: nothing has been indexed into it yet")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("beach", Term("text", "beach", 1.0)),
        ("2:beach", Term("text", "beach", 2.0)),
        ("0.5:sunset glow", Term("text", "sunset glow", 0.5)),
        ("text:12:30 train", Term("text", "12:30 train", 1.0)),
        ("3:text:2:1 odds", Term("text", "2:1 odds", 3.0)),
        ("item:42", Term("item", "42", 1.0)),
        ("1.5:item:7", Term("item", "7", 1.5)),
        ("-1:beach", Term("text", "-1:beach", 1.0)),
    ],
)
def test_term_parsing(raw: str, expected: Term) -> None:
    assert parse_term(raw) == expected


def test_term_naming_a_file_is_an_image_and_image_prefix_forces_it(tmp_path: Path) -> None:
    f = make_photo(tmp_path / "2:beach.jpg", seed=1)
    assert parse_term(str(f)) == Term("image", str(f), 1.0)
    assert parse_term(f"4:image:{f}") == Term("image", str(f), 4.0)
    with pytest.raises(QueryError, match="does not exist"):
        parse_term("image:/no/such.jpg")
    with pytest.raises(QueryError, match="not accepted"):
        parse_term(f"image:{f}", allow_files=False)
    assert parse_term(str(f), allow_files=False).kind == "text"


@pytest.mark.parametrize("raw", ["0:beach", "text:", "  ", "item:abc"])
def test_bad_terms_are_refused(raw: str) -> None:
    with pytest.raises(QueryError):
        parse_term(raw)


def test_glob_and_dates() -> None:
    assert glob_for("2021/*") == "*/2021/*"
    assert glob_for("/abs/*.jpg") == "/abs/*.jpg"
    assert parse_date("2024-07-01", "--after") == datetime(2024, 7, 1).timestamp()
    with pytest.raises(QueryError, match="--before 'July'"):
        parse_date("July", "--before")
