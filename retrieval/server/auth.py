"""The token check: a bearer header, or the session cookie that /login sets."""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

COOKIE = "clipdex_session"
COOKIE_MAX_AGE_S = 30 * 24 * 3600


def session_value(token: str) -> str:
    """The login cookie's value: derived from the token, so the cookie never holds the token."""
    return hmac.new(token.encode(), b"clipdex-session-v1", hashlib.sha256).hexdigest()


def is_token(candidate: str, token: str) -> bool:
    return hmac.compare_digest(candidate.encode(), token.encode())


def has_valid_token(headers: Headers, token: str) -> bool:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and is_token(value.strip(), token):
        return True
    cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())
