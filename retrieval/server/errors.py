"""The server's typed errors, and the one place that turns any error into an HTTP response.

Every error response is JSON: `{"error": {"status": 404, "message": "..."}}`. The
library's errors that a request parameter fixes are worded here in HTTP terms
(`WORDING`); the CLI words the same errors with its flags in `cli/error_lines.py`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from indexer.errors import BadOption, ClipdexError, FiltersOnTexts, ModelNotAvailable, NoVectors, QueryError

log = logging.getLogger("clipdex.server")


class ServerConfigError(ClipdexError):
    """A `clipdex serve` option is invalid."""


class InsecureBind(ServerConfigError):
    """A network-reachable bind address was given without a token, or with one too short."""


class ItemNotFound(ClipdexError):
    """No indexed item (or no readable image file) has this id."""


class SavedModelNotFound(ClipdexError):
    """No model saved in the library (with a chart, where one is asked for) has this name."""


class UploadTooLarge(ClipdexError):
    """An upload is over the byte or pixel limit."""


class UnsupportedUpload(ClipdexError):
    """An uploaded file is not an image in a supported format."""


class Unauthorized(ClipdexError):
    """A request lacks the server's token."""


class HostNotAllowed(ClipdexError):
    """A request's Host header is not a name this server answers (DNS rebinding guard)."""


class QueryStringTooLong(ClipdexError):
    """A request's query string is over the server's length limit."""


class CrossSiteRequest(ClipdexError):
    """A request sent by another site's page (Sec-Fetch-Site, Origin), refused against CSRF."""


# Looked up along the exception's class hierarchy: the most specific entry wins.
STATUS: dict[type[Exception], int] = {
    QueryError: 400,
    HostNotAllowed: 400,
    Unauthorized: 401,
    CrossSiteRequest: 403,
    ItemNotFound: 404,
    SavedModelNotFound: 404,
    NoVectors: 404,
    UploadTooLarge: 413,
    QueryStringTooLong: 414,
    UnsupportedUpload: 422,
    RequestValidationError: 422,
    ModelNotAvailable: 503,
    ClipdexError: 400,
}


# The library's errors worded for an HTTP client: options are request parameters.
WORDING: dict[type[Exception], Callable[[Any], str]] = {
    BadOption: lambda e: e.worded(lambda name: f"parameter {name}"),
    FiltersOnTexts: lambda e: "path and date filters (path, after, before) apply to images; "
    "they cannot be used with texts=true",
}


def status_for(exc: Exception) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def message_for(exc: Exception) -> str:
    if isinstance(exc, RequestValidationError):
        return "; ".join(_validation_message(e) for e in exc.errors())
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    if status_for(exc) == 500:
        return "internal server error; see the server's log"
    for cls in type(exc).__mro__:
        if cls in WORDING:
            return WORDING[cls](exc)
    return str(exc)


def response_for(exc: Exception) -> JSONResponse:
    """The JSON error response for any exception."""
    status = status_for(exc)
    if status == 500:
        log.error("unexpected error", exc_info=exc)
    headers = {"WWW-Authenticate": 'Bearer realm="clipdex"'} if status == 401 else None
    return JSONResponse({"error": {"status": status, "message": message_for(exc)}}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc)

    for cls in (ClipdexError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(cls, handle)


def _validation_message(err: object) -> str:
    if not isinstance(err, dict):
        return str(err)
    where = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path")]
    field = ".".join(where) or "request"
    return f"{field}: {err.get('msg', 'invalid')}"
