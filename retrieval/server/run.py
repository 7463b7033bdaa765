"""`serve`: bind the port, open a library, warm the model, and serve until interrupted."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from typing import TYPE_CHECKING, Callable

from retrieval.library import Library
from retrieval.server.errors import ServerConfigError
from retrieval.server.settings import ServerSettings
from retrieval.server_record import ServerRecord, remove_record, write_record

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


def serve(
    settings: ServerSettings,
    home: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    device: str = "auto",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted. `on_ready(url)` is called once the model is loaded.

    Raises InsecureBind (network bind without a strong token) and ServerConfigError (port
    in use, address not of this machine) before loading anything, then the model
    and catalog errors of Library.open and search before serving.
    While it serves, LIBRARY/server.json tells `clipdex search` where to send queries.
    """
    import uvicorn

    from retrieval.server.app import create_app

    settings.check()
    sock = bind(settings)
    with sock, Library.open(home, db=db, device=device) as lib:
        app = create_app(lib, settings)
        app.state.service.warm_up()
        config = uvicorn_config(app, settings)
        record = server_record(settings, sock, lib)
        try:
            write_record(lib.home, record)
        except OSError:
            pass  # a read-only library: searches run locally
        if on_ready is not None:
            on_ready(settings.url)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            remove_record(lib.home, record.pid)


def server_record(settings: ServerSettings, sock: socket.socket, lib: Library) -> ServerRecord:
    """What `clipdex search` reads to delegate to this server (the port as bound: --port 0 picks one)."""
    bound = dataclasses.replace(settings, port=int(sock.getsockname()[1]))
    return ServerRecord(
        url=bound.url, pid=os.getpid(), machine=socket.gethostname(), catalog_id=lib.catalog.catalog_id,
        token_required=bool(settings.token), model=settings.model.label if settings.model is not None else None,
    )


def uvicorn_config(app: FastAPI, settings: ServerSettings) -> uvicorn.Config:
    """How uvicorn serves `app`: connection limits and timeouts from `settings`, nothing trusted from proxies."""
    import uvicorn

    from retrieval.server.connections import with_header_timeout

    return uvicorn.Config(
        app,
        http=with_header_timeout(settings.header_timeout_s),  # uvicorn alone waits forever for headers
        ws="none",  # no WebSocket routes: upgrade requests are plain HTTP requests
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # never trust X-Forwarded-* from whoever connects
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_graceful_shutdown=3,
    )


def bind(settings: ServerSettings) -> socket.socket:
    """A socket bound to the settings' address, or ServerConfigError saying what to change."""
    host = settings.host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ServerConfigError(f"--host {settings.host} is not an address of this machine ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServerConfigError(
                f"port {settings.port} on {settings.host} is in use; stop the other server or pick another --port"
            ) from None
        raise ServerConfigError(f"cannot bind {settings.host}:{settings.port}: {e.strerror}") from None
    return sock
