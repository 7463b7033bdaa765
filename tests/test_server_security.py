"""Security: no file outside the indexed items, limits, token, Host allow-list, EXIF-free thumbnails."""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app as cli_app
from conftest import TINY, exif_with, make_photo
from retrieval.library import Library
from retrieval.server import ServerSettings, create_app
from retrieval.server.errors import InsecureBind
from serverkit import ManualClock, client_for, item_id, make_library, raw_request

SECRET = b"TOP-SECRET-NOT-A-PHOTO"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, Path]]:
    lib, root = make_library(tmp_path_factory.mktemp("sec"))
    yield lib, root
    lib.close()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.jpg"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


# -- nothing outside the indexed items -----------------------------------------------------------


TRAVERSALS = [
    b"/api/v1/items/../../../../etc/passwd",
    b"/api/v1/items/1/../../../../../etc/passwd",
    b"/api/v1/items/1/image/../../../../etc/passwd",
    b"/api/v1/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
    b"/api/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
    b"/api/v1/items//etc/passwd/image",
    b"/api/v1/items/%2Fetc%2Fpasswd/image",
    b"/static/../../../../etc/passwd",
    b"/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"/static/%2e%2e/app.py",
    b"/static/%2e%2e/errors.py",
    b"/static//etc/passwd",
    b"/static/login.html",
    b"/../../../etc/passwd",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/etc/passwd",
]


@pytest.mark.parametrize("raw_path", TRAVERSALS)
def test_traversal_paths_never_reach_a_file(served: tuple[Library, Path], raw_path: bytes) -> None:
    lib, root = served
    app = create_app(lib, ServerSettings())
    r = raw_request(app, raw_path)
    assert r.status == 404, r.body
    assert r.body.startswith(b'{"error":')
    assert b"root:" not in r.body and b"def " not in r.body and b"<form" not in r.body


def test_path_parameters_next_to_an_id_are_ignored(served: tuple[Library, Path]) -> None:
    lib, _ = served
    app = create_app(lib, ServerSettings())
    r = raw_request(app, b"/api/v1/items/1/image?path=/etc/passwd&file=../../etc/passwd")
    assert r.status == 200
    assert r.body == Path(lib.item(1).path or "").read_bytes()  # the id alone picks the file


def test_absolute_and_image_paths_in_queries_are_text_never_files(served: tuple[Library, Path]) -> None:
    lib, root = served
    client = client_for(lib)
    photo = root / "trip" / "beach0.jpg"
    as_text = client.get("/api/v1/search", params={"q": str(photo), "top": 3}).json()["results"]
    by_file = lib.search(str(photo), top=3, allow_files=True)  # what reading the file would give
    assert by_file[0].score > 0.999
    assert [h["id"] for h in as_text] == [r.id for r in lib.search(str(photo), top=3, allow_files=False)]
    assert all(h["score"] < 0.9 for h in as_text)
    r = client.get("/api/v1/search", params={"q": "x", "add": [f"image:{photo}"]})
    assert r.status_code == 400


def test_symlinks_to_non_images_are_never_served(tmp_path: Path, secret: Path) -> None:
    root = tmp_path / "photos"
    make_photo(root / "real.jpg", seed=1)
    make_photo(tmp_path / "elsewhere" / "linked.jpg", seed=2)
    os.symlink(secret, root / "sneaky.jpg")
    os.symlink(tmp_path / "elsewhere" / "linked.jpg", root / "linked.jpg")
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        client = client_for(lib)
        assert lib.status().skipped == 1  # the symlink to a non-image
        ids = {lib.item(i).path: i for i in range(1, 10) if lib.item(i) is not None}  # type: ignore[union-attr]
        sneaky = ids[str(root / "sneaky.jpg")]
        for route in ("image", "thumbnail", "similar"):
            r = client.get(f"/api/v1/items/{sneaky}/{route}")
            assert r.status_code == 404 and SECRET not in r.content
        # A symlink to a real photo is indexed (searchable), but no file is served through a link.
        linked = client.get(f"/api/v1/items/{ids[str(root / 'linked.jpg')]}/image")
        assert linked.status_code == 404 and "symbolic link" in linked.json()["error"]["message"]


def test_a_photo_swapped_for_a_symlink_fifo_or_text_after_indexing_is_not_served(tmp_path: Path, secret: Path) -> None:
    root = tmp_path / "photos"
    for n in range(3):
        make_photo(root / f"p{n}.jpg", seed=n)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        client = client_for(lib)
        ids = [item_id(lib, root / f"p{n}.jpg") for n in range(3)]
        (root / "p0.jpg").unlink()
        os.symlink(secret, root / "p0.jpg")
        (root / "p1.jpg").unlink()
        os.mkfifo(root / "p1.jpg")  # opening this blocking would hang the server
        (root / "p2.jpg").write_bytes(SECRET)
        for i in ids:
            for route in ("image", "thumbnail"):
                r = client.get(f"/api/v1/items/{i}/{route}")
                assert r.status_code == 404, (i, route)
                assert SECRET not in r.content
                assert "run `clipdex index` to refresh" in r.json()["error"]["message"]


# -- limits --------------------------------------------------------------------------------------


def photo_bytes(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def padded_jpeg(n_bytes: int) -> bytes:
    """A valid JPEG of exactly n_bytes: decoders ignore bytes after the end-of-image marker."""
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue() + b"\0" * (n_bytes - out.tell())


def test_upload_over_the_declared_limit_is_413_before_the_body_is_read(served: tuple[Library, Path]) -> None:
    lib, _ = served
    app = create_app(lib, ServerSettings(max_upload_bytes=1024 * 1024))
    chunks = [b"x" * 65536] * 64  # 4 MB that never gets read
    headers = {"content-type": "multipart/form-data; boundary=b", "content-length": str(64 * 65536)}
    r = raw_request(app, b"/api/v1/search/image", method="POST", headers=headers, chunks=chunks)
    assert (r.status, r.chunks_read) == (413, 0)
    message = b"the request body is over the 1 MB upload limit (--max-upload-mb)"
    assert r.body == b'{"error":{"status":413,"message":"' + message + b'"}}'


def test_upload_without_a_length_is_cut_off_at_the_limit(served: tuple[Library, Path]) -> None:
    lib, _ = served
    app = create_app(lib, ServerSettings(max_upload_bytes=1024 * 1024))
    chunks = [b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"] + [b"x" * 65536] * 64
    headers = {"content-type": "multipart/form-data; boundary=b", "transfer-encoding": "chunked"}
    r = raw_request(app, b"/api/v1/search/image", method="POST", headers=headers, chunks=chunks)
    assert r.status == 413
    assert r.started == [413]  # the app's own reaction to the cut-off body never reaches the client
    assert r.chunks_read == 18  # 1 MB + the 64 KB form allowance, then one chunk over: nothing more is read


def test_oversized_uploads_through_the_client_give_413(served: tuple[Library, Path]) -> None:
    lib, _ = served
    client = client_for(lib, max_upload_bytes=1024 * 1024)
    big = padded_jpeg(1024 * 1024 + 1000)  # over the file limit but within the form allowance
    r = client.post("/api/v1/search/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert (r.status_code, r.json()["error"]["message"]) == (
        413, "the upload is 1.0 MB, over the 1.0 MB limit (--max-upload-mb)")
    r = client.post("/api/v1/search/image", files={"file": ("huge.jpg", big * 2, "image/jpeg")})
    assert r.status_code == 413


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's shape."""
    data = bytearray(photo_bytes((1, 1)))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (10000, 8000, "the uploaded image is 10000x8000 pixels, over the 64,000,000 pixel limit"),
        (20000, 20000, "the uploaded image has more pixels than the 64,000,000 pixel limit"),  # Pillow's own guard
    ],
)
def test_decompression_bomb_uploads_are_refused_from_the_header(
    served: tuple[Library, Path], width: int, height: int, message: str
) -> None:
    lib, _ = served
    bomb = png_claiming(width, height)
    assert len(bomb) < 100
    r = client_for(lib).post("/api/v1/search/image", files={"file": ("bomb.png", bomb, "image/png")})
    assert (r.status_code, r.json()["error"]["message"]) == (413, message)


# -- token ---------------------------------------------------------------------------------------


def test_missing_or_wrong_token_gives_401(served: tuple[Library, Path]) -> None:
    lib, _ = served
    client = client_for(lib, token="correct horse", clock=ManualClock().clock())  # wrong tokens wait on no real clock
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic correct horse"},
                    {"Cookie": "clipdex_session=correct horse"}):
        for path in ("/api/v1/status", "/api/v1/search?q=x", "/api/v1/items/1/image", "/static/app.js", "/openapi.json",
                     "/api/v1/items/1/thumbnail"):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["www-authenticate"] == 'Bearer realm="clipdex"'
            assert r.json()["error"]["message"].startswith("this server needs its token")
    r = client.post("/api/v1/search/image", files={"file": ("a.png", photo_bytes((8, 8)), "image/png")})
    assert r.status_code == 401
    ok = client.get("/api/v1/status", headers={"Authorization": "Bearer correct horse"})
    assert ok.status_code == 200


def test_browser_login_sets_a_cookie_that_is_not_the_token(served: tuple[Library, Path]) -> None:
    lib, _ = served
    client = client_for(lib, token="correct horse")
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and '<form method="post" action="/login">' in page.text
    wrong = client.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and "That token is not right" in wrong.text
    assert "clipdex_session" not in client.cookies
    right = client.post("/login", data={"token": "correct horse"}, follow_redirects=False)
    assert (right.status_code, right.headers["location"]) == (303, "/")
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "correct" not in cookie
    assert client.get("/api/v1/status").status_code == 200  # the cookie now rides along
    assert client.get("/").status_code == 200


# -- Host header (DNS rebinding) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "host", "status"),
    [
        ({}, "127.0.0.1:8000", 200),
        ({}, "localhost:8000", 200),
        ({}, "LOCALHOST.", 200),
        ({}, "[::1]:8000", 200),
        ({}, "evil.example:8000", 400),
        ({}, "127.0.0.1.evil.example", 400),
        ({}, "", 400),
        ({"allow_hosts": ("photos.lan",)}, "photos.lan:8000", 200),
        ({"allow_hosts": ("photos.lan",)}, "other.lan:8000", 400),
        ({"host": "192.168.1.20", "token": "t"}, "192.168.1.20:8000", 200),
        ({"host": "192.168.1.20", "token": "t"}, "localhost:8000", 400),
        ({"host": "0.0.0.0", "token": "t"}, "10.0.0.7:8000", 200),
        ({"host": "0.0.0.0", "token": "t"}, "rebind.attacker.example", 400),
    ],
)
def test_host_header_allow_list(
    served: tuple[Library, Path], settings: dict[str, object], host: str, status: int
) -> None:
    lib, _ = served
    app = create_app(lib, ServerSettings(**settings))  # type: ignore[arg-type]
    r = raw_request(app, b"/api/v1/status", headers={"host": host, "authorization": "Bearer t"})
    assert r.status == status
    if status == 400:
        assert b"is not served here; start the server with --allow-host" in r.body


# -- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "photos.lan"])
def test_non_loopback_bind_without_token_is_refused(host: str) -> None:
    with pytest.raises(InsecureBind, match=f"binding {host} would expose the library"):
        ServerSettings(host=host).check()
    ServerSettings(host=host, token="sixteen-chars-ok").check()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_binds_need_no_token(host: str) -> None:
    ServerSettings(host=host).check()


def test_serve_command_refuses_a_network_bind_without_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLIPDEX_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1
    assert result.output == (
        "error: binding 0.0.0.0 would expose the library to the network without a password; "
        "pass --token SECRET (or set CLIPDEX_TOKEN), or bind --host 127.0.0.1\n"
    )
    assert not (tmp_path / "lib").exists()  # refused before anything was opened


# -- thumbnails and headers ----------------------------------------------------------------------


def test_thumbnails_carry_no_exif_gps_or_profile(tmp_path: Path) -> None:
    exif = exif_with(taken="2022:01:02 03:04:05", orientation=6, camera=("Apple", "iPhone 15"))
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 22.0, 1.0), "E", (4.0, 53.0, 2.0)
    root = tmp_path / "photos"
    make_photo(root / "gps.jpg", seed=4, exif=exif)
    original = (root / "gps.jpg").read_bytes()
    assert b"Exif" in original and Image.open(root / "gps.jpg").getexif().get_ifd(0x8825)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
        r = client_for(lib).get(f"/api/v1/items/{item_id(lib, root / 'gps.jpg')}/thumbnail")
    thumb = Image.open(io.BytesIO(r.content))
    assert dict(thumb.getexif()) == {}
    assert b"Exif" not in r.content and b"iPhone" not in r.content and b"Apple" not in r.content
    assert "icc_profile" not in thumb.info and "exif" not in thumb.info
    assert thumb.size == (120, 160)  # orientation applied to the pixels instead


def test_every_response_carries_protective_headers(served: tuple[Library, Path]) -> None:
    lib, _ = served
    client = client_for(lib)
    for path in ("/", "/api/v1/status", "/api/v1/items/999/image", "/static/app.js"):
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["cross-origin-resource-policy"] == "same-origin"
        assert "script-src 'self'" in h["content-security-policy"]
        assert "access-control-allow-origin" not in h


def test_no_directory_listing(served: tuple[Library, Path]) -> None:
    lib, _ = served
    client = client_for(lib)
    client.get("/api/v1/items/1/thumbnail")
    for path in ("/static/", "/static", "/api/v1/items/", "/api/v1/items", "/api/v1/", "/thumbnails/", "/api/"):
        r = client.get(path)
        assert r.status_code in (404, 405), path
        assert b"app.js" not in r.content and b".jpg" not in r.content


def test_serve_refuses_a_port_in_use_before_loading_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", "--port", str(port), "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1
    assert result.output == (
        f"error: port {port} on 127.0.0.1 is in use; stop the other server or pick another --port\n"
    )
    assert not (tmp_path / "lib").exists()


def test_allow_host_entries_may_carry_a_port() -> None:
    names = ServerSettings(allow_hosts=("Photos.LAN:8443", "[fd00::5]:80")).allowed_host_names()
    assert names == {"127.0.0.1", "localhost", "::1", "photos.lan", "fd00::5"}
