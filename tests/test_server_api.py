"""The HTTP API through FastAPI's test client: every route, its results and its error statuses."""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from cli.app import app as cli_app
from conftest import TINY, make_photo
from retrieval.library import Library
from retrieval.query import SearchFilter
from retrieval.search import ImageResult, Result, TextResult
from serverkit import TEXTS, client_for, item_id, make_library

CLI_IMAGE_FIELDS = {"id", "path", "score", "width", "height", "taken_at", "camera", "lens", "focal_mm", "iso", "lat", "lon", "tags"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, Path, TestClient]]:
    lib, root = make_library(tmp_path_factory.mktemp("api"))
    with client_for(lib) as client:
        yield lib, root, client
    lib.close()


def expected(results: list[Result]) -> list[dict[str, object]]:
    """What the API must return for library results: the CLI's --json plus URLs for images."""
    out = []
    for r in results:
        d = r.to_dict()
        if isinstance(r, ImageResult):
            d |= {"thumbnail_url": f"/api/v1/items/{r.id}/thumbnail", "image_url": f"/api/v1/items/{r.id}/image"}
        out.append(d)
    return out


def error(status: int, message: str) -> dict[str, object]:
    return {"error": {"status": status, "message": message}}


# -- search by text ------------------------------------------------------------------------------


def test_text_search_returns_the_library_results_with_urls(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    r = client.get("/api/v1/search", params={"q": "a sunny beach", "top": 5})
    assert r.status_code == 200
    assert r.json() == {"results": expected(lib.search("a sunny beach", top=5, allow_files=False))}
    assert set(r.json()["results"][0]) == CLI_IMAGE_FIELDS | {"thumbnail_url", "image_url"}
    assert len(r.json()["results"]) == 5


def test_weighted_add_and_sub_terms_combine_like_the_cli(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    anchor = item_id(lib, root / "trip" / "beach4.jpg")
    params = {"q": "2:beach", "add": ["0.5:sunset", f"item:{anchor}"], "sub": ["people"], "top": 10}
    r = client.get("/api/v1/search", params=params)
    want = lib.search("2:beach", add=["0.5:sunset", f"item:{anchor}"], sub=["people"], top=10, allow_files=False)
    assert r.json() == {"results": expected(want)}
    # The terms take effect: ten photos can keep their order, but not their scores.
    assert [h["score"] for h in r.json()["results"]] != [h.score for h in lib.search("2:beach", top=10)]


def test_offset_pages_through_one_ranking(served: tuple[Library, Path, TestClient]) -> None:
    _, _, client = served
    full = client.get("/api/v1/search", params={"q": "colours", "top": 10}).json()["results"]
    first = client.get("/api/v1/search", params={"q": "colours", "top": 4}).json()["results"]
    second = client.get("/api/v1/search", params={"q": "colours", "top": 4, "offset": 4}).json()["results"]
    last = client.get("/api/v1/search", params={"q": "colours", "top": 4, "offset": 8}).json()["results"]
    assert first + second + last == full
    assert len(last) == 2


def test_path_date_score_and_sort_filters(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    r = client.get("/api/v1/search", params={"q": "a cat", "top": 10, "path": "home/*"})
    want = lib.search("a cat", top=10, filters=SearchFilter.parse(path="home/*"))
    assert r.json() == {"results": expected(want)}
    assert sorted(Path(h["path"]).name for h in r.json()["results"]) == ["cat6.png", "cat7.png", "cat8.png", "cat9.png"]

    r = client.get("/api/v1/search", params={"q": "x", "after": "2021-06-02", "before": "2021-06-04", "sort": "date"})
    assert [Path(h["path"]).name for h in r.json()["results"]] == ["beach2.jpg", "beach1.jpg"]

    cut = client.get("/api/v1/search", params={"q": "x", "top": 10}).json()["results"]
    threshold = (cut[2]["score"] + cut[3]["score"]) / 2
    r = client.get("/api/v1/search", params={"q": "x", "top": 10, "min_score": threshold})
    assert r.json()["results"] == cut[:3]


def test_texts_true_searches_the_text_collection(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    r = client.get("/api/v1/search", params={"q": "a beach in summer", "texts": "true", "top": 4})
    assert r.json() == {"results": expected(lib.search("a beach in summer", texts=True, top=4))}
    assert sorted(h["text"] for h in r.json()["results"]) == sorted(TEXTS)
    assert set(r.json()["results"][0]) == {"id", "text", "score"}


# -- search by an uploaded photo -----------------------------------------------------------------


def test_uploaded_photo_finds_itself_first(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    photo = root / "trip" / "beach3.jpg"
    data = photo.read_bytes()
    r = client.post("/api/v1/search/image", files={"file": ("beach3.jpg", data, "image/jpeg")}, data={"top": "5"})
    assert r.status_code == 200
    assert r.json() == {"results": expected(lib.search(image=data, top=5))}
    assert r.json()["results"][0]["path"] == str(photo)
    assert r.json()["results"][0]["score"] > 0.999


def test_uploaded_photo_takes_filters_terms_and_paging(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    data = (root / "home" / "cat7.png").read_bytes()
    form = {"top": "2", "offset": "1", "path": "trip/*", "add": ["0.5:sand"], "sort": "score"}
    r = client.post("/api/v1/search/image", files={"file": ("cat.png", data, "image/png")}, data=form)
    want = lib.search(image=data, add=["0.5:sand"], top=2, offset=1, filters=SearchFilter.parse(path="trip/*"))
    assert r.json() == {"results": expected(want)}
    assert all("/trip/" in h["path"] for h in r.json()["results"])


def test_uploaded_photo_with_texts_gives_image_to_text(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    data = (root / "trip" / "beach0.jpg").read_bytes()
    form = {"texts": "true", "top": "2"}
    r = client.post("/api/v1/search/image", files={"file": ("b.jpg", data, "image/jpeg")}, data=form)
    assert r.json() == {"results": expected(lib.search(image=data, texts=True, top=2))}
    assert [set(h) for h in r.json()["results"]] == [{"id", "text", "score"}] * 2


# -- items ---------------------------------------------------------------------------------------


def test_similar_is_more_like_this_and_starts_with_the_item(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    anchor = item_id(lib, root / "home" / "cat8.png")
    r = client.get(f"/api/v1/items/{anchor}/similar", params={"top": 6})
    assert r.json() == {"results": expected(lib.search(f"item:{anchor}", top=6))}
    assert r.json()["results"][0]["id"] == anchor

    r = client.get(f"/api/v1/items/{anchor}/similar", params={"top": 3, "path": "trip/*", "after": "2021-06-03"})
    window = SearchFilter.parse(path="trip/*", after="2021-06-03")
    want = lib.search(f"item:{anchor}", top=3, filters=window)
    assert r.json() == {"results": expected(want)}

    r = client.get(f"/api/v1/items/{anchor}/similar", params={"texts": "true", "top": 4})
    assert r.json() == {"results": expected(lib.search(f"item:{anchor}", texts=True, top=4))}


def test_item_metadata_has_path_date_camera_and_size(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    photo = root / "trip" / "beach1.jpg"
    anchor = item_id(lib, photo)
    r = client.get(f"/api/v1/items/{anchor}")
    taken = next(h for h in lib.search(f"item:{anchor}", top=1) if isinstance(h, ImageResult)).taken_at
    assert r.json() == {
        "id": anchor, "kind": "image", "path": str(photo), "text": None, "width": 160, "height": 120,
        "taken_at": taken, "camera": "Canon EOS R6", "size": photo.stat().st_size,
        "lens": None, "focal_mm": None, "iso": None, "lat": None, "lon": None, "tags": [],  # tests/test_tags_http.py
        "thumbnail_url": f"/api/v1/items/{anchor}/thumbnail", "image_url": f"/api/v1/items/{anchor}/image",
    }
    assert taken is not None and taken.startswith("2021-06-02T10:00:00")


def test_thumbnail_is_small_upright_and_cached_with_caching_headers(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    rotated = item_id(lib, root / "trip" / "beach2.jpg")  # stored 160x120 with EXIF orientation 6
    r = client.get(f"/api/v1/items/{rotated}/thumbnail")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "private, max-age=3600"
    assert Image.open(io.BytesIO(r.content)).size == (120, 160)
    cached = list((lib.home / "thumbnails").rglob("*.jpg"))
    assert [p.read_bytes() for p in cached if r.headers["etag"].strip('"') in p.name] == [r.content]

    again = client.get(f"/api/v1/items/{rotated}/thumbnail", headers={"If-None-Match": r.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")


def test_large_photo_thumbnail_is_bounded_to_400_pixels(tmp_path: Path) -> None:
    make_photo(tmp_path / "big" / "wide.jpg", seed=3, size=(1600, 900))
    with Library.open(tmp_path / "lib") as lib:
        lib.index([tmp_path / "big"], model=TINY)
        client = client_for(lib)
        r = client.get(f"/api/v1/items/{item_id(lib, tmp_path / 'big' / 'wide.jpg')}/thumbnail")
        assert Image.open(io.BytesIO(r.content)).size == (400, 225)


def test_image_serves_the_original_file_by_id(served: tuple[Library, Path, TestClient]) -> None:
    lib, root, client = served
    photo = root / "home" / "cat9.png"
    r = client.get(f"/api/v1/items/{item_id(lib, photo)}/image")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content == photo.read_bytes()
    again = client.get(f"/api/v1/items/{item_id(lib, photo)}/image", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_status_reports_the_library(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    body = client.get("/api/v1/status").json()
    want = lib.status().to_dict()
    assert {k: v for k, v in body.items() if k != "size_bytes"} == {k: v for k, v in want.items() if k != "size_bytes"}
    assert (body["images"], body["texts"]) == (10, 4)


def test_items_indexed_by_another_library_handle_appear_without_restart(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_photo(root / "a.jpg", seed=1)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        client = client_for(lib)
        assert len(client.get("/api/v1/search", params={"q": "x"}).json()["results"]) == 1
        make_photo(root / "b.jpg", seed=2)
        with Library.open(tmp_path / "lib") as other:  # what another `clipdex index` process does
            other.index(model=TINY)
        hits = client.get("/api/v1/search", params={"q": "x"}).json()["results"]
        assert sorted(Path(h["path"]).name for h in hits) == ["a.jpg", "b.jpg"]
        new = next(h for h in hits if h["path"].endswith("b.jpg"))
        assert client.get(new["thumbnail_url"]).status_code == 200


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": ""}, 400, "empty query text"),
        ({"q": "0:beach"}, 400, "weight in '0:beach' must be a positive number"),
        ({"q": "image:/etc/hosts"}, 400, "image paths are not accepted here; upload the image or use item:ID"),
        ({"q": "x", "after": "last week"}, 400,
         "after 'last week' is not an ISO 8601 date (e.g. 2024-07-01 or 2024-07-01T18:30)"),
        ({"q": "x", "texts": "true", "path": "home/*"}, 400,
         "path and date filters (path, after, before) apply to images; they cannot be used with texts=true"),
        ({"q": "item:999"}, 404, "item 999 is not in the library"),
        ({"q": "x", "sub": ["item:12345"]}, 404, "item 12345 is not in the library"),
        ({"q": "x", "top": 0}, 422, "top: Input should be greater than or equal to 1"),
        ({"q": "x", "top": "ten"}, 422, "top: Input should be a valid integer, unable to parse string as an integer"),
        ({"q": "x", "sort": "name"}, 422, "sort: Input should be 'score' or 'date'"),
        ({}, 422, "q: Field required"),
    ],
)
def test_search_errors_are_json_with_the_right_status(
    served: tuple[Library, Path, TestClient], params: dict[str, object], status: int, message: str
) -> None:
    r = served[2].get("/api/v1/search", params=params)  # type: ignore[arg-type]
    assert (r.status_code, r.json()) == (status, error(status, message))


def test_upload_errors(served: tuple[Library, Path, TestClient]) -> None:
    client = served[2]
    r = client.post("/api/v1/search/image", files={"file": ("notes.txt", b"not a photo", "text/plain")})
    assert (r.status_code, r.json()) == (
        422, error(422, "the uploaded file is not a JPEG, PNG, WebP, GIF, TIFF or BMP image"))
    r = client.post("/api/v1/search/image", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert (r.status_code, r.json()) == (422, error(422, "the uploaded file is empty"))
    r = client.post("/api/v1/search/image", data={"top": "3"})
    assert (r.status_code, r.json()) == (422, error(422, "file: Field required"))


@pytest.mark.parametrize("route", ["similar", "thumbnail", "image", ""])
@pytest.mark.parametrize("unknown", [0, 999, 2**70])
def test_unknown_item_ids_give_404(served: tuple[Library, Path, TestClient], route: str, unknown: int) -> None:
    r = served[2].get(f"/api/v1/items/{unknown}/{route}".rstrip("/"))
    assert r.status_code == 404
    assert r.json()["error"]["status"] == 404


def test_a_text_item_has_no_image_or_thumbnail(served: tuple[Library, Path, TestClient]) -> None:
    lib, _, client = served
    # found by its own words (the query's vector is the stored text's), never by what the tiny model makes of "snow"
    text_id = next(r.id for r in lib.search("snow on the mountains", texts=True, top=4) if r.text == "snow on the mountains")
    for route in ("image", "thumbnail"):
        r = client.get(f"/api/v1/items/{text_id}/{route}")
        assert (r.status_code, r.json()) == (404, error(404, f"item {text_id} is not an indexed photo of this library"))
    assert client.get(f"/api/v1/items/{text_id}").json()["text"] == "snow on the mountains"


def test_an_empty_library_answers_404_with_what_to_do(tmp_path: Path) -> None:
    with Library.open(tmp_path / "empty") as lib:
        r = client_for(lib).get("/api/v1/search", params={"q": "x"})
    assert (r.status_code, r.json()) == (404, error(404, "the library is empty: nothing has been indexed into it yet"))


def test_unknown_routes_are_json_404(served: tuple[Library, Path, TestClient]) -> None:
    r = served[2].get("/api/v2/search")
    assert (r.status_code, r.json()) == (404, error(404, "Not Found"))


# -- schema and page -----------------------------------------------------------------------------


def test_openapi_schema_documents_every_route(served: tuple[Library, Path, TestClient]) -> None:
    schema = served[2].get("/openapi.json").json()
    assert sorted(schema["paths"]) == [
        "/api/v1/duplicates",
        "/api/v1/items/{item_id}", "/api/v1/items/{item_id}/image", "/api/v1/items/{item_id}/similar",
        "/api/v1/items/{item_id}/thumbnail", "/api/v1/saved-models", "/api/v1/saved-models/{name}/chart",
        "/api/v1/search", "/api/v1/search/image", "/api/v1/status", "/api/v1/tags",
    ]
    search = schema["paths"]["/api/v1/search"]["get"]
    assert sorted(p["name"] for p in search["parameters"]) == [
        "add", "after", "before", "camera", "collapse", "focal", "gps", "has_gps", "iso", "lens", "min_score", "near",
        "offset", "path", "q", "sort", "sub", "tag", "texts", "top", "within"]
    assert sorted(search["responses"]) == ["200", "400", "401", "404", "413", "414", "422"]
    upload = schema["paths"]["/api/v1/search/image"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]


def test_result_schemas_are_the_search_results_fields_plus_urls(served: tuple[Library, Path, TestClient]) -> None:
    """The HTTP result shapes derive from ImageResult and TextResult; clients see them as they always were."""
    schemas = served[2].get("/openapi.json").json()["components"]["schemas"]
    nullable = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert schemas["ImageHit"] == {
        "properties": {
            "id": {"type": "integer", "title": "Id"}, "path": {"type": "string", "title": "Path"},
            "score": {"type": "number", "title": "Score"}, "width": nullable | {"title": "Width"},
            "height": nullable | {"title": "Height"},
            "taken_at": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Taken At",
                         "description": "EXIF capture time, ISO 8601 in the server's time zone."},
            "camera": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Camera"},
            "lens": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Lens"},
            "focal_mm": {"anyOf": [{"type": "number"}, {"type": "null"}], "title": "Focal Mm"},
            "iso": nullable | {"title": "Iso"},
            "lat": {"anyOf": [{"type": "number"}, {"type": "null"}], "title": "Lat",
                    "description": "Latitude in degrees (south negative); null unless the request has `gps=1`."},
            "lon": {"anyOf": [{"type": "number"}, {"type": "null"}], "title": "Lon",
                    "description": "Longitude in degrees (west negative); null unless the request has `gps=1`."},
            "tags": {"type": "array", "items": {"type": "string"}, "title": "Tags",
                     "description": "Tags from `clipdex tag` and folder tags."},
            "thumbnail_url": {"type": "string", "title": "Thumbnail Url"},
            "image_url": {"type": "string", "title": "Image Url"},
        },
        "type": "object", "title": "ImageHit",
        "required": ["id", "path", "score", "width", "height", "taken_at", "camera", "lens", "focal_mm", "iso", "lat",
                     "lon", "tags", "thumbnail_url", "image_url"],
    }  # fmt: skip
    assert schemas["TextHit"] == {
        "properties": {"id": {"type": "integer", "title": "Id"}, "text": {"type": "string", "title": "Text"},
                       "score": {"type": "number", "title": "Score"}},
        "type": "object", "required": ["id", "text", "score"], "title": "TextHit",
    }  # fmt: skip
    image_fields = [f.name for f in fields(ImageResult)]
    assert schemas["ImageHit"]["required"] == [*image_fields, "thumbnail_url", "image_url"]
    assert schemas["TextHit"]["required"] == [f.name for f in fields(TextResult)]


def test_page_and_its_static_files_are_served(served: tuple[Library, Path, TestClient]) -> None:
    client = served[2]
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for ref in ('id="q"', "/static/app.js", "/static/style.css", 'id="file"', 'id="viewer"'):
        assert ref in page.text
    assert client.get("/static/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/favicon.svg").headers["content-type"] == "image/svg+xml"
    assert client.get("/login").status_code == 200  # no token: the form just sends you to /


def test_serve_command_is_registered_with_its_options() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--library", "--db", "--host", "--port", "--model", "--checkpoint", "--token", "--allow-host",
                   "--max-upload-mb", "CLIPDEX_TOKEN"):
        assert option in result.output
