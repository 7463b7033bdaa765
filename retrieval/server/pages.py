"""The web page: `/`, its shipped static files (a fixed list, never a directory), and /login."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from retrieval.server.auth import COOKIE, COOKIE_MAX_AGE_S, is_token, session_value
from retrieval.server.settings import ServerSettings

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NO_CACHE = {"Cache-Control": "no-cache"}
_LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_WRONG_TOKEN = "That token is not right. Check the --token the server was started with."


def static_files() -> dict[str, Path]:
    """Every file the page may load, by name: a fixed list made when the server starts."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "login.html"}


def page_router(settings: ServerSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = static_files()

    @router.get("/")
    def index() -> FileResponse:
        return FileResponse(files["index.html"], media_type=MEDIA_TYPES[".html"], headers=_NO_CACHE)

    @router.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=_NO_CACHE)

    @router.get("/login")
    def login_form() -> Response:
        return login_page() if settings.token else RedirectResponse("/", status_code=303)

    @router.post("/login")
    def login(token: Annotated[str, Form()] = "") -> Response:
        if not settings.token:
            return RedirectResponse("/", status_code=303)
        if not is_token(token, settings.token):
            return login_page(status_code=401, message=_WRONG_TOKEN)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, session_value(settings.token), max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict", path="/"
        )
        return response

    return router


def login_page(status_code: int = 200, message: str | None = None) -> HTMLResponse:
    """The login form; `message` is one of the fixed strings above, never request input."""
    html = (STATIC / "login.html").read_text(encoding="utf-8")
    note = f'<p class="error" role="alert">{message}</p>' if message else ""
    return HTMLResponse(
        html.replace("<!--MESSAGE-->", note),
        status_code=status_code,
        headers={"Content-Security-Policy": _LOGIN_CSP, "Cache-Control": "no-store"},
    )
