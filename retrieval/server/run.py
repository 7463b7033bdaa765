"""`serve`: open a library, warm the model, and run the HTTP server until interrupted."""

from __future__ import annotations

import os
from typing import Callable

from retrieval.library import Library
from retrieval.server.settings import ServerSettings


def serve(
    settings: ServerSettings,
    home: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    device: str = "auto",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted. `on_ready(url)` is called once the model is loaded, before binding.

    Raises InsecureBind (network bind without a token), ServerConfigError, and the
    model and catalog errors of Library.open and search, all before binding.
    """
    import uvicorn

    from retrieval.server.app import create_app

    settings.check()
    with Library.open(home, db=db, device=device) as lib:
        app = create_app(lib, settings)
        app.state.service.warm_up()
        if on_ready is not None:
            on_ready(settings.url)
        uvicorn.run(
            app,
            host=settings.host.strip("[]"),
            port=settings.port,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # never trust X-Forwarded-* from whoever connects
            timeout_graceful_shutdown=3,
        )
