"""`create_app`: the FastAPI application serving one Library."""

from __future__ import annotations

from fastapi import FastAPI

from retrieval.library import Library
from retrieval.server.api import api_router
from retrieval.server.errors import install_error_handlers
from retrieval.server.pages import page_router
from retrieval.server.security import Guard
from retrieval.server.service import SearchService
from retrieval.server.settings import ServerSettings

DESCRIPTION = """Search a clipdex photo library by text, by an uploaded photo, or by an item ("more like this").

Query terms (`q`, `add`, `sub`) are text or `item:ID`, optionally weighted `W:TERM`.
With a token, send `Authorization: Bearer TOKEN` (or log in at `/login` for a cookie).
Errors are JSON: `{"error": {"status": 404, "message": "..."}}`."""


def create_app(library: Library, settings: ServerSettings) -> FastAPI:
    """The app for `library`; the caller keeps the library open while it serves."""
    service = SearchService(library, settings)
    # The interactive /docs page loads its scripts from a CDN; the schema itself is served.
    app = FastAPI(title="clipdex", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.service = service
    app.include_router(api_router(service))
    app.include_router(page_router(settings))
    install_error_handlers(app)
    app.add_middleware(Guard, settings=settings)
    return app
