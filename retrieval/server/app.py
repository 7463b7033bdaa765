"""`create_app`: the FastAPI application serving one Library."""

from __future__ import annotations

from fastapi import FastAPI

from retrieval.library import Library
from retrieval.server.api import api_router
from retrieval.server.auth import Auth, Clock
from retrieval.server.errors import install_error_handlers
from retrieval.server.pages import page_router
from retrieval.server.security import Guard
from retrieval.server.service import SearchService
from retrieval.server.settings import ServerSettings

DESCRIPTION = """Search a clipdex photo library by text, by an uploaded photo, or by an item ("more like this").

Query terms (`q`, `add`, `sub`) are text or `item:ID`, optionally weighted `W:TERM`.
With a token, send `Authorization: Bearer TOKEN` (or log in at `/login` for a cookie).
Requests from other sites' pages (`Sec-Fetch-Site`, `Origin`) are refused with 403.
Errors are JSON: `{"error": {"status": 404, "message": "..."}}`."""


def create_app(library: Library, settings: ServerSettings, *, clock: Clock | None = None) -> FastAPI:
    """The app for `library`; the caller keeps the library open while it serves.

    `clock` is the time the token checks use (cookie ages, the wrong-token slow-down); tests pass their own.
    """
    auth = Auth(settings.token, settings, clock) if settings.token else None
    service = SearchService(library, settings)
    # The interactive /docs page loads its scripts from a CDN; the schema itself is served.
    app = FastAPI(title="clipdex", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.service = service
    app.include_router(api_router(service))
    app.include_router(page_router(auth))
    install_error_handlers(app)
    app.add_middleware(Guard, settings=settings, auth=auth)
    return app
