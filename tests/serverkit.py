"""Helpers for the server tests: a dated photo library, clients, raw ASGI requests, a real server on a socket."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conftest import TINY, exif_with, make_photo
from retrieval.library import Library
from retrieval.search import ImageResult
from retrieval.server import ServerSettings, create_app
from retrieval.server.auth import Clock
from retrieval.server.run import bind, uvicorn_config

BASE_URL = "http://127.0.0.1:8000"
TEXTS = ["a sunny beach", "a cat on a sofa", "snow on the mountains", "city lights at night"]


def make_library(folder: Path) -> tuple[Library, Path]:
    """Ten photos: trip/ beach0-5.jpg taken 2021-06-01..06 (beach1 from a Canon, beach2 rotated),
    home/ cat6-9.png without dates; plus four texts. Indexed with the tiny model."""
    root = folder / "photos"
    for i in range(6):
        exif = exif_with(
            taken=f"2021:06:0{i + 1} 10:00:00",
            camera=("Canon", "Canon EOS R6") if i == 1 else None,
            orientation=6 if i == 2 else None,
        )
        make_photo(root / "trip" / f"beach{i}.jpg", seed=i, exif=exif)
    for i in range(6, 10):
        make_photo(root / "home" / f"cat{i}.png", seed=i)
    lib = Library.open(folder / "lib")
    lib.index([root], model=TINY)
    lib.add_texts(TEXTS)
    return lib, root


def client_for(lib: Library, clock: Clock | None = None, **settings: Any) -> TestClient:
    return TestClient(create_app(lib, ServerSettings(**settings), clock=clock), base_url=BASE_URL)


@dataclass
class ManualClock:
    """Time that moves only when a test moves it; `sleep` records its delays instead of waiting."""

    t: float = 1_700_000_000.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    async def sleep(self, delay_s: float) -> None:
        self.slept.append(delay_s)

    def clock(self) -> Clock:
        return Clock(now=self.now, monotonic=self.now, sleep=self.sleep)


@contextmanager
def running_server(lib: Library, **settings: Any) -> Iterator[int]:
    """`clipdex serve`'s uvicorn set-up, serving on a free port of 127.0.0.1 in a thread; yields the port."""
    import uvicorn

    config = ServerSettings(port=0, **settings)
    sock = bind(config)
    server = uvicorn.Server(uvicorn_config(create_app(lib, config), config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped before it started")
            threading.Event().wait(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def item_id(lib: Library, path: Path) -> int:
    """The id of an indexed photo, looked up through the public search API."""
    return next(r.id for r in lib.search("a photo", top=1000) if isinstance(r, ImageResult) and r.path == str(path))


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int = 0
    started: list[int] = field(default_factory=list)


def raw_request(
    app: FastAPI,
    raw_path: bytes,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
) -> RawResponse:
    """Send one request straight to the ASGI app, with the path bytes exactly as a client sent them.

    HTTP clients normalise `../` before sending; servers (uvicorn) percent-decode
    the path without resolving dot segments. This reproduces what uvicorn passes on.
    """
    from urllib.parse import unquote_to_bytes

    path_part, _, query = raw_path.partition(b"?")
    hdrs = {"host": "127.0.0.1:8000", **(headers or {})}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": unquote_to_bytes(path_part).decode("utf-8", "surrogateescape"), "raw_path": path_part,
        "root_path": "", "query_string": query, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs.items()],
    }
    body = list(chunks or [])
    out = RawResponse(0, {}, b"")

    async def receive() -> dict[str, Any]:
        if out.chunks_read < len(body):
            out.chunks_read += 1
            return {"type": "http.request", "body": body[out.chunks_read - 1], "more_body": out.chunks_read < len(body)}
        if not body and out.chunks_read == 0:
            out.chunks_read = 1
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.started.append(message["status"])
            out.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    return out
