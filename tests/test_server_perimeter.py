"""The server's perimeter: cross-site refusal, Host parsing, no-store on JSON, token strength,
the wrong-token slow-down and expiring session cookies."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import anyio
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app as cli_app
from retrieval.library import Library
from retrieval.server import ServerSettings, create_app
from retrieval.server.auth import Clock
from retrieval.server.errors import InsecureBind, ServerConfigError
from retrieval.server.settings import parse_host, split_host_header
from serverkit import ManualClock, client_for, make_library, raw_request

TOKEN = "correct-horse-battery-staple"
OWN = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    lib, _ = make_library(tmp_path_factory.mktemp("perimeter"))
    yield lib
    lib.close()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def upload_body() -> tuple[dict[str, str], bytes]:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + png() + b"\r\n--b--\r\n"
    return {"content-type": "multipart/form-data; boundary=b", "content-length": str(len(body))}, body


# -- cross-site requests ---------------------------------------------------------------------------

CROSS_SITE = [
    ({"sec-fetch-site": "cross-site"}, "a cross-site request is refused (Sec-Fetch-Site: cross-site)"),
    ({"sec-fetch-site": "same-site"}, "a same-site request is refused (Sec-Fetch-Site: same-site)"),  # another port
    ({"origin": "http://evil.example"}, "a request from another origin is refused (Origin: http://evil.example)"),
    ({"origin": "http://127.0.0.1:9999"}, "a request from another origin is refused (Origin: http://127.0.0.1:9999)"),
    ({"origin": "https://127.0.0.1:8000"}, "a request from another origin is refused (Origin: https://127.0.0.1:8000)"),
    ({"origin": "http://localhost:8000"}, "a request from another origin is refused (Origin: http://localhost:8000)"),
    ({"origin": "null"}, "a request from another origin is refused (Origin: null)"),  # a sandboxed frame
    ({"origin": "http://127.0.0.1:8000@evil.example"},
     "a request from another origin is refused (Origin: http://127.0.0.1:8000@evil.example)"),
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"},
     "a cross-site request is refused (Sec-Fetch-Site: cross-site)"),  # a link to the API, not to the page
]
API_ROUTES = [("GET", b"/api/v1/status"), ("GET", b"/api/v1/search?q=beach"), ("GET", b"/api/v1/items/1"),
              ("GET", b"/api/v1/items/1/thumbnail"), ("GET", b"/api/v1/items/1/image"),
              ("GET", b"/api/v1/items/1/similar"), ("GET", b"/openapi.json"), ("POST", b"/api/v1/search/image")]


@pytest.mark.parametrize(("headers", "reason"), CROSS_SITE)
def test_cross_site_requests_to_the_api_are_refused_with_403(
    served: Library, headers: dict[str, str], reason: str
) -> None:
    app = create_app(served, ServerSettings())
    for method, path in API_ROUTES:
        extra, body = upload_body() if method == "POST" else ({}, b"")
        r = raw_request(app, path, method=method, headers={**headers, **extra}, chunks=[body] if body else None)
        assert r.status == 403, (method, path)
        message = f"{reason}: only this server's own page may call it"
        assert json.loads(r.body) == {"error": {"status": 403, "message": message}}
        assert r.chunks_read == 0  # refused before the upload was read
        assert r.headers["cache-control"] == "no-store"


def test_requests_from_the_own_page_and_from_curl_pass(served: Library) -> None:
    app = create_app(served, ServerSettings(allow_hosts=("photos.lan",)))
    own_page = [
        {},  # curl, scripts: no browser headers at all
        {"sec-fetch-site": "same-origin", "origin": OWN},
        {"sec-fetch-site": "none"},  # typed into the address bar
        {"origin": OWN},  # a browser without Sec-Fetch-*
        {"origin": "HTTP://127.0.0.1:8000"},
        {"host": "localhost:8000", "origin": "http://localhost:8000", "sec-fetch-site": "same-origin"},
        {"host": "[::1]:8000", "origin": "http://[::1]:8000"},
        {"host": "photos.lan", "origin": "http://photos.lan:80"},  # the default port, written or not
        {"origin": "https://photos.lan"},  # a TLS proxy for photos.lan, forwarding to 127.0.0.1:8000
    ]
    for headers in own_page:
        for method, path in API_ROUTES:
            extra, body = upload_body() if method == "POST" else ({}, b"")
            r = raw_request(app, path, method=method, headers={**headers, **extra}, chunks=[body] if body else None)
            assert r.status == 200, (headers, path, r.body[:200])


def test_following_a_link_to_the_page_from_another_site_opens_it(served: Library) -> None:
    app = create_app(served, ServerSettings())
    link = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
    assert raw_request(app, b"/", headers=link).status == 200
    framed = {**link, "sec-fetch-dest": "iframe"}
    assert raw_request(app, b"/", headers=framed).status == 403
    fetched = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "script"}
    assert raw_request(app, b"/static/app.js", headers=fetched).status == 403


def test_login_form_must_be_posted_by_the_own_page(served: Library) -> None:
    client = client_for(served, token=TOKEN)
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "same-origin"}):
        r = client.post("/login", data={"token": TOKEN}, headers=headers, follow_redirects=False)
        assert r.status_code == 403
        assert "set-cookie" not in r.headers
    own = {"Origin": OWN, "Sec-Fetch-Site": "same-origin"}
    r = client.post("/login", data={"token": TOKEN}, headers=own, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/")
    assert "clipdex_session=v2." in r.headers["set-cookie"]


# -- Host header parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost.:8000", ("localhost", 8000)),
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[fd00::5]", ("fd00::5", None)),
        ("photos.lan:65535", ("photos.lan", 65535)),
        ("localhost:8000@evil.com", None),
        ("evil.com@localhost:8000", None),
        ("localhost:8000:9000", None),
        ("localhost:", None),
        ("localhost:99999", None),
        ("localhost:80a", None),
        ("::1", None),  # a bare IPv6 address is not a Host value
        ("[not-v6]:80", None),
        ("[::1", None),
        ("local host", None),
        ("localhost/evil", None),
        ("loc%61lhost", None),
        ("a,b", None),
        (".", None),
        ("", None),
    ],
)
def test_host_values_are_parsed_strictly(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_host(value) == parsed
    assert split_host_header(value) == (parsed[0] if parsed else "")


def test_a_host_with_userinfo_is_refused(served: Library) -> None:
    app = create_app(served, ServerSettings())
    r = raw_request(app, b"/api/v1/status", headers={"host": "localhost:8000@evil.com"})
    message = "Host 'localhost:8000@evil.com' is not a valid host[:port]"
    assert json.loads(r.body) == {"error": {"status": 400, "message": message}}


def test_allow_host_entries_must_be_host_names() -> None:
    ServerSettings(allow_hosts=("photos.lan", "photos.lan:8443", "fd00::5", "[fd00::5]:80", "10.0.0.7")).check()
    with pytest.raises(ServerConfigError, match=r"--allow-host 'a@b' is not a host name or address"):
        ServerSettings(allow_hosts=("a@b",)).check()


# -- caching ---------------------------------------------------------------------------------------


def test_json_answers_are_not_stored_but_images_keep_their_cache_headers(served: Library) -> None:
    client = client_for(served)
    for path in ("/api/v1/status", "/api/v1/search?q=beach", "/api/v1/items/1", "/api/v1/items/999",
                 "/api/v1/items/999/image", "/openapi.json", "/login"):
        assert client.get(path, follow_redirects=False).headers["cache-control"] == "no-store", path
    upload = client.post("/api/v1/search/image", files={"file": ("a.png", png(), "image/png")})
    assert upload.headers["cache-control"] == "no-store"
    assert client.get("/api/v1/items/1/thumbnail").headers["cache-control"] == "private, max-age=3600"
    assert client.get("/api/v1/items/1/image").headers["cache-control"] == "private, no-cache"
    assert client.get("/static/app.js").headers["cache-control"] == "no-cache"


# -- token strength --------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["x", "fifteen-chars-x"])
def test_a_network_bind_needs_a_token_of_16_characters(token: str) -> None:
    message = (f"binding 0.0.0.0 needs a token of at least 16 characters (this one has {len(token)}); "
               "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    with pytest.raises(InsecureBind) as refused:
        ServerSettings(host="0.0.0.0", token=token).check()
    assert str(refused.value) == message
    ServerSettings(host="0.0.0.0", token=token + "y" * (16 - len(token))).check()
    ServerSettings(host="127.0.0.1", token=token).check()  # loopback: the token is the owner's extra lock


def test_serve_command_refuses_a_short_token_for_a_network_bind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLIPDEX_TOKEN", "hunter2")
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1
    assert result.output.startswith("error: binding 0.0.0.0 needs a token of at least 16 characters (this one has 7)")
    assert not (tmp_path / "lib").exists()


# -- wrong tokens are slowed down; a right one never is ---------------------------------------------


def test_wrong_tokens_wait_in_turn_and_the_right_token_never_waits(served: Library) -> None:
    time = ManualClock()
    client = client_for(served, clock=time.clock(), token=TOKEN, auth_failure_burst=3, auth_failure_interval_s=2.0)
    wrong = {"Authorization": "Bearer guess"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(3):
        assert client.get("/api/v1/status", headers=wrong).status_code == 401
    assert time.slept == []  # a burst of typos is answered at once
    assert client.get("/api/v1/status", headers=wrong).status_code == 401
    assert client.post("/login", data={"token": "guess"}).status_code == 401  # the form counts too
    assert time.slept == [2.0, 4.0]  # each further guess waits for the next free slot
    assert client.get("/api/v1/status", headers=right).status_code == 200
    assert client.get("/api/v1/status", headers={**right, "Cookie": "clipdex_session=forged"}).status_code == 200
    assert client.get("/api/v1/status").status_code == 401  # no token at all: nothing guessed, nothing to slow
    assert client.get("/api/v1/status", headers={"Cookie": "clipdex_session=v2.1.abc"}).status_code == 401
    assert client.get("/api/v1/status", headers={**wrong, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert time.slept == [2.0, 4.0]  # none of those waited or took a slot
    login = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303 and time.slept == [2.0, 4.0]
    client.cookies.clear()  # with the signed-in cookie, a wrong bearer token does not matter
    time.t += 60  # the burst refills at one slot per interval
    for _ in range(3):
        client.get("/api/v1/status", headers=wrong)
    assert time.slept == [2.0, 4.0]
    client.get("/api/v1/status", headers=wrong)
    assert time.slept == [2.0, 4.0, 2.0]


async def status_of(app: object, headers: dict[str, str]) -> int:
    """Send one GET /api/v1/status straight to the ASGI app; its status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/v1/status", "raw_path": b"/api/v1/status", "root_path": "", "query_string": b"",
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
             "headers": [(k.encode(), v.encode()) for k, v in {"host": "127.0.0.1:8000", **headers}.items()]}
    started: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            started.append(int(message["status"]))  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[operator]
    return started[0]


def test_a_right_token_is_answered_while_wrong_ones_are_held(served: Library) -> None:
    held = anyio.Event()
    waiting: list[float] = []

    async def hold(delay_s: float) -> None:  # a sleep that lasts until the test lets go
        waiting.append(delay_s)
        await held.wait()

    clock = Clock(now=lambda: 0.0, monotonic=lambda: 0.0, sleep=hold)
    app = create_app(served, ServerSettings(token=TOKEN, auth_failure_burst=1), clock=clock)
    answers: dict[str, int] = {}

    async def wrong(n: int) -> None:
        answers[f"wrong{n}"] = await status_of(app, {"authorization": "Bearer guess"})

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(wrong, n)
            for _ in range(10_000):  # let the guesses reach the throttle (a bound, not a time limit)
                if len(waiting) == 3:
                    break
                await anyio.sleep(0)
            assert len(waiting) == 3
            answers["right"] = await status_of(app, {"authorization": f"Bearer {TOKEN}"})
            assert sorted(answers) == ["right", "wrong0"]  # three guesses are still held; the owner is not
            held.set()

    anyio.run(main)
    assert answers == {"right": 200, "wrong0": 401, "wrong1": 401, "wrong2": 401, "wrong3": 401}
    assert sorted(waiting) == [1.0, 2.0, 3.0]


# -- session cookies -------------------------------------------------------------------------------


def test_session_cookies_expire_and_each_login_issues_a_fresh_one(served: Library) -> None:
    time = ManualClock()
    day = 24 * 3600
    client = client_for(served, clock=time.clock(), token=TOKEN, session_lifetime_s=7 * day)
    first = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    set_cookie = first.headers["set-cookie"]
    assert "Max-Age=604800" in set_cookie and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    cookie = client.cookies["clipdex_session"]
    assert cookie.startswith(f"v2.{int(time.t)}.") and TOKEN not in cookie
    time.t += 7 * day - 1
    assert client.get("/api/v1/status").status_code == 200
    time.t += 2
    expired = client.get("/api/v1/status")
    assert (expired.status_code, expired.json()["error"]["message"]) == (
        401, "your sign-in has expired: log in again at /login")
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "Your sign-in has expired. Enter the token again." in page.text
    client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert client.cookies["clipdex_session"] != cookie
    assert client.get("/api/v1/status").status_code == 200
    assert time.slept == []  # an expired cookie is not a wrong guess


def test_cookies_not_signed_with_this_token_are_refused(served: Library) -> None:
    time = ManualClock()
    other = client_for(served, clock=time.clock(), token="another-token-of-16+")
    other.post("/login", data={"token": "another-token-of-16+"})
    foreign = other.cookies["clipdex_session"]
    client = client_for(served, clock=time.clock(), token=TOKEN)
    client.post("/login", data={"token": TOKEN})
    mine = client.cookies["clipdex_session"]
    client.cookies.clear()
    version, issued, signature = mine.split(".")
    for value in (foreign, f"{version}.{int(issued) + 3600}.{signature}", f"{version}.{issued}.{'0' * 64}",
                  "v2." + "9" * 5000 + ".x", mine.replace("v2.", "v1.", 1)):
        assert client.get("/api/v1/status", headers={"Cookie": f"clipdex_session={value}"}).status_code == 401, value
    assert client.get("/api/v1/status", headers={"Cookie": f"clipdex_session={mine}"}).status_code == 200
    assert time.slept == []
