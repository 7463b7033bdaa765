"""The web page: `/`, its shipped static files (a fixed list, never a directory), and /login."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from retrieval.server.auth import COOKIE, Auth

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
EXPIRED = "Your sign-in has expired. Enter the token again."


def static_files() -> dict[str, Path]:
    """Every file the page may load, by name: a fixed list made when the server starts."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "login.html"}


def page_router(auth: Auth | None) -> APIRouter:
    """The page's routes; `auth` is None for a server without a token."""
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
        return login_page() if auth else RedirectResponse("/", status_code=303)

    @router.post("/login")
    async def login(token: Annotated[str, Form()] = "") -> Response:
        if auth is None:
            return RedirectResponse("/", status_code=303)
        if not auth.is_token(token):
            await auth.throttle.wait_after_failure()
            return login_page(status_code=401, message=_WRONG_TOKEN)
        response = RedirectResponse("/", status_code=303)
        # A fresh cookie at every sign-in: it expires `lifetime_s` from now, whatever came before.
        response.set_cookie(
            COOKIE, auth.new_session(), max_age=auth.lifetime_s, httponly=True, samesite="strict", path="/"
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
