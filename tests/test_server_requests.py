"""Requests a client can make expensive or hostile: bounded terms and weights, uploads decoded
outside the search lock, files that changed since indexing, descriptors, a read-only library."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import retrieval.search
from conftest import TINY, make_photo
from indexer.catalog import WriteBatch
from indexer.decode import DecodeResult, InputSpec
from retrieval.errors import NonFiniteQuery, QueryError
from retrieval.library import Library
from retrieval.query import MAX_TERM_CHARS
from retrieval.server import ServerSettings, create_app
from retrieval.server.api import MAX_QUERY_STRING_BYTES
from serverkit import BASE_URL, client_for, item_id, make_library, raw_request

HANG_GUARD_S = 120  # only ends a deadlocked test; nothing here measures time
AT_MOST_16 = "at most 16 are allowed (q, add and sub together)"
ROUTES = ("image", "thumbnail")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, Path, TestClient]]:
    lib, root = make_library(tmp_path_factory.mktemp("requests"))
    with client_for(lib) as client:
        yield lib, root, client
    lib.close()


def error(status: int, message: str) -> dict[str, object]:
    return {"error": {"status": status, "message": message}}


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


# -- finding 2a: terms are bounded in number and length, the query string in size -----------------


def test_sixteen_terms_of_300_characters_are_searched(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    term = ("a cat on a sofa " * 30)[:MAX_TERM_CHARS]
    params: dict[str, Any] = {"q": term, "add": [term] * 10, "sub": ["2:" + term[2:]] * 5, "top": 3}
    r = client.get("/api/v1/search", params=params)
    assert r.status_code == 200
    want = lib.search(term, add=[term] * 10, sub=["2:" + term[2:]] * 5, top=3, allow_files=False)
    assert [h["id"] for h in r.json()["results"]] == [w.id for w in want]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "cat", "add": ["dog"] * 10, "sub": ["sea"] * 6}, f"the query has 17 terms; {AT_MOST_16}"),
        ({"q": "x", "add": ["a"] * 2000}, f"the query has 2001 terms; {AT_MOST_16}"),
        ({"q": "b" * 301}, f"the term '{'b' * 39}…' is 301 characters long; at most 300 are allowed"),
        ({"q": "cat", "sub": ["2:" + "é" * 299]},
         f"the term '2:{'é' * 37}…' is 301 characters long; at most 300 are allowed"),
    ],
)
def test_too_many_or_too_long_terms_are_400_not_truncated(
    served: tuple[Library, Path, TestClient], params: dict[str, Any], message: str
) -> None:
    r = served[2].get("/api/v1/search", params=params)
    assert (r.status_code, r.json()) == (400, error(400, message))


def test_upload_and_similar_terms_are_bounded_too(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    r = client.post("/api/v1/search/image", files={"file": ("a.png", png(), "image/png")}, data={"add": ["dog"] * 17})
    assert (r.status_code, r.json()["error"]["message"]) == (400, f"the query has 17 terms; {AT_MOST_16}")
    r = client.get(f"/api/v1/items/{item_id(lib, root / 'home' / 'cat6.png')}/similar", params={"add": ["c" * 400]})
    assert r.status_code == 400 and "is 400 characters long" in r.json()["error"]["message"]


def test_a_query_string_over_32_kib_is_414(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    seven_thousand = "&".join(["q=cat"] + [f"add=dog{n}" for n in range(7000)])  # the review's 77 KB request
    assert len(seven_thousand) > MAX_QUERY_STRING_BYTES
    raw = raw_request(create_app(lib, ServerSettings()), f"/api/v1/search?{seven_thousand}".encode())
    message = f"the query string is {len(seven_thousand):,} bytes, over the 32,768 byte limit"
    assert (raw.status, json.loads(raw.body)) == (414, error(414, message))
    assert client.get("/api/v1/search", params={"q": "cat", "path": "x" * MAX_QUERY_STRING_BYTES}).status_code == 414
    assert client.get("/api/v1/search", params={"q": "cat", "path": "x" * 1000}).status_code == 200


# -- finding 2b: an upload is decoded outside the search lock -------------------------------------


def test_a_text_search_answers_while_an_upload_is_being_decoded(
    served: tuple[Library, Path, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib, _, client = served
    decoding, searched = threading.Event(), threading.Event()
    released_by_search: list[bool] = []
    real_decode = retrieval.search.decode_bytes

    def held_decode(data: bytes, spec: InputSpec, max_pixels: int = 10**8) -> DecodeResult:
        """The upload's decoding, held until the text search below has answered."""
        decoding.set()
        released_by_search.append(searched.wait(HANG_GUARD_S))
        return real_decode(data, spec, max_pixels)

    monkeypatch.setattr(retrieval.search, "decode_bytes", held_decode)
    uploads: list[Any] = []
    files = {"file": ("a.png", png(), "image/png")}
    upload = threading.Thread(target=lambda: uploads.append(client.post("/api/v1/search/image", files=files)))
    upload.start()
    try:
        assert decoding.wait(HANG_GUARD_S)
        r = client.get("/api/v1/search", params={"q": "a cat on a sofa", "top": 3})
        assert r.status_code == 200
        assert [h["id"] for h in r.json()["results"]] == [w.id for w in lib.search("a cat on a sofa", top=3)]
    finally:
        searched.set()
        upload.join(HANG_GUARD_S)
    assert released_by_search == [True]  # the decode was still in progress when the search answered
    assert uploads[0].status_code == 200


# -- finding 9: weights and vectors must be finite -------------------------------------------------


def test_a_weight_of_300_nines_is_400_not_empty_results(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    message = f"weight in '{'9' * 39}…' is over 1,000,000; weights are relative, so scale them all down"
    with pytest.raises(QueryError) as raised:
        lib.search(f"{'9' * 300}:cat")  # the library has no term length limit; the weight is refused
    assert str(raised.value) == message
    r = client.get("/api/v1/search", params={"q": f"{'9' * 300}:cat"})  # over the server's 300 characters
    too_long = f"the term '{'9' * 39}…' is 304 characters long; at most 300 are allowed"
    assert (r.status_code, r.json()["error"]["message"]) == (400, too_long)
    nines = "9" * 200
    for params in ({"q": f"{nines}:cat"}, {"q": "cat", "add": [f"{nines}:dog"]}, {"q": "cat", "sub": [f"{nines}.5:x"]}):
        r = client.get("/api/v1/search", params=params)
        assert (r.status_code, r.json()) == (400, error(400, message))
    r = client.get("/api/v1/search", params={"q": "1000000:cat", "add": ["0.000001:dog"], "top": 2})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_a_non_finite_stored_vector_is_a_typed_error_and_a_400(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photos" / "a.jpg", seed=1)
    make_photo(tmp_path / "photos" / "b.jpg", seed=2)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=TINY)
        damaged = item_id(lib, photo)
        dim = lib.active_model().dim  # type: ignore[union-attr]
        # import refuses NaN rows, so damage the stored vector the way a bad disk or an older
        # clipdex could have: straight through the catalog's writer.
        model_id = lib.active_model().id  # type: ignore[union-attr]
        lib.catalog.write(WriteBatch(vectors=[(damaged, model_id, np.full(dim, np.nan, dtype=np.float32))]))
        with pytest.raises(NonFiniteQuery, match="not finite"):
            lib.search(f"item:{damaged}")
        r = client_for(lib).get(f"/api/v1/items/{damaged}/similar")
        assert (r.status_code, r.json()) == (
            400, error(400, "the query's vector is not finite (infinity or NaN); lower the weights of its terms"))


# -- finding 9: a library the server cannot write to still gets thumbnails -------------------------


def test_thumbnails_of_a_library_that_cannot_be_written_are_served_uncached(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photos" / "a.jpg", seed=4)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=TINY)
        # What a read-only library does to the cache: no folder can be made there. (Tests run as
        # root here, which chmod cannot stop, so a file stands where the cache folder would go.)
        (tmp_path / "lib" / "thumbnails").write_bytes(b"")
        client = client_for(lib)
        url = f"/api/v1/items/{item_id(lib, photo)}/thumbnail"
        first, second = client.get(url), client.get(url)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["content-type"] == "image/jpeg" and first.content == second.content
    assert Image.open(io.BytesIO(first.content)).size == (160, 120)
    assert first.headers["etag"] == second.headers["etag"]


# -- finding 4: no descriptor leaks --------------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors through /proc")
def test_an_item_replaced_by_a_folder_leaks_no_descriptor(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photos" / "a.jpg", seed=5)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([tmp_path / "photos"], model=TINY)
        ident = item_id(lib, photo)
        photo.unlink()
        photo.mkdir()
        app = create_app(lib, ServerSettings())
        with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:  # as a real server would
            for route in ROUTES:
                client.get(f"/api/v1/items/{ident}/{route}")  # warm up
            before = open_descriptors()
            answers = [client.get(f"/api/v1/items/{ident}/{route}") for _ in range(25) for route in ROUTES]
            assert open_descriptors() == before
    assert {(r.status_code, "no longer a photo" in r.json()["error"]["message"]) for r in answers} == {(404, True)}


# -- finding 5: only the file the catalog recorded is served ---------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Iterator[tuple[Library, Path, TestClient]]:
    root = tmp_path / "photos"
    for n in range(3):
        make_photo(root / "album" / f"p{n}.jpg", seed=n)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        yield lib, root, client_for(lib)


def assert_not_served(client: TestClient, ident: int, why: str) -> None:
    for route in ("image", "thumbnail"):
        r = client.get(f"/api/v1/items/{ident}/{route}")
        assert r.status_code == 404, (route, r.status_code)
        assert why in r.json()["error"]["message"] and "run `clipdex index` to refresh" in r.json()["error"]["message"]


def test_a_photo_swapped_for_a_symlink_to_another_photo_is_not_served(
    photos: tuple[Library, Path, TestClient], tmp_path: Path
) -> None:
    lib, root, client = photos
    elsewhere = make_photo(tmp_path / "private" / "other.jpg", seed=9)
    p0, p1 = root / "album" / "p0.jpg", root / "album" / "p1.jpg"
    ids = [item_id(lib, p0), item_id(lib, p1)]
    assert client.get(f"/api/v1/items/{ids[0]}/thumbnail").status_code == 200  # now cached
    p0.unlink()
    p0.symlink_to(elsewhere)  # any image on the disk
    p1.unlink()
    p1.symlink_to(root / "album" / "p2.jpg")  # even another photo of the library
    for ident in ids:
        assert_not_served(client, ident, "it is now a symbolic link")
    assert client.get(f"/api/v1/items/{item_id(lib, root / 'album' / 'p2.jpg')}/image").status_code == 200


def test_a_photo_whose_folder_is_swapped_for_a_symlink_is_not_served(
    photos: tuple[Library, Path, TestClient], tmp_path: Path
) -> None:
    lib, root, client = photos
    ident = item_id(lib, root / "album" / "p0.jpg")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    make_photo(decoy / "p0.jpg", seed=8, size=(160, 120))
    # Same size and mtime as the indexed photo, so only the symlinked folder gives it away.
    recorded = (root / "album" / "p0.jpg").stat()
    with open(decoy / "p0.jpg", "r+b") as f:
        f.truncate(recorded.st_size)
    os.utime(decoy / "p0.jpg", ns=(recorded.st_atime_ns, recorded.st_mtime_ns))
    shutil.rmtree(root / "album")
    (root / "album").symlink_to(decoy)
    assert_not_served(client, ident, "a folder on its path is now a symbolic link")


def test_a_photo_replaced_by_another_photo_is_not_served(photos: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = photos
    p0 = root / "album" / "p0.jpg"
    ident = item_id(lib, p0)
    make_photo(p0, seed=7, size=(200, 100))  # a different picture at the same path
    assert_not_served(client, ident, "has changed since it was indexed")
    lib.index()  # refreshing the catalog serves the new file again
    r = client.get(f"/api/v1/items/{item_id(lib, p0)}/image")
    assert (r.status_code, r.content) == (200, p0.read_bytes())


def test_an_imported_photo_outside_every_root_is_not_served(
    photos: tuple[Library, Path, TestClient], tmp_path: Path
) -> None:
    lib, _, client = photos
    outside = make_photo(tmp_path / "private" / "x.jpg", seed=6)
    dim = lib.active_model().dim  # type: ignore[union-attr]
    lib.import_embeddings([str(outside)], np.ones((1, dim), dtype=np.float32), model=TINY)
    assert_not_served(client, item_id(lib, outside), "is outside the library's folders")
