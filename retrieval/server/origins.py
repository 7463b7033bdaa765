"""Whether a request comes from this server's own page: its Sec-Fetch-Site and Origin headers.

Browsers send these headers and pages cannot forge them, so another site's page (or
a page served from another port of this machine) is told apart from this server's
own page. Clients that are not browsers (curl, scripts) send neither and pass.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from retrieval.server.settings import parse_host

_OWN_SITES = ("same-origin", "none")  # `none`: typed in the address bar, a bookmark
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOWN_CHARS = 100
_API_PATHS = ("/api/", "/openapi.json")


def cross_site_reason(scope: Scope, headers: Headers, proxy_names: frozenset[str]) -> str | None:
    """Why this request is refused as cross-site, or None when it may be this server's own page's (or no page's).

    `proxy_names` are the `--allow-host` names: an Origin with one of them is
    trusted at any scheme and port, as a reverse proxy in front changes both.
    """
    if _is_page_navigation(scope, headers):
        return None  # following a link to the page is harmless: its requests are checked in turn
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _OWN_SITES:
        shown = site[:_SHOWN_CHARS]
        return f"a {shown} request is refused (Sec-Fetch-Site: {shown}): only this server's own page may call it"
    origin = headers.get("origin")
    if origin is not None and not _is_own_origin(origin, scope, headers, proxy_names):
        shown = origin[:_SHOWN_CHARS]
        return f"a request from another origin is refused (Origin: {shown}): only this server's own page may call it"
    return None


def _is_page_navigation(scope: Scope, headers: Headers) -> bool:
    """A browser opening a page (not the API) in a tab: a link or a bookmark."""
    is_document = headers.get("sec-fetch-mode") == "navigate" and headers.get("sec-fetch-dest") == "document"
    return is_document and scope["method"] in ("GET", "HEAD") and not scope["path"].startswith(_API_PATHS)


def _is_own_origin(origin: str, scope: Scope, headers: Headers, proxy_names: frozenset[str]) -> bool:
    """Whether `origin` is this request's own scheme://host:port (`null`, sent by sandboxed pages, is not)."""
    scheme, sep, rest = origin.strip().partition("://")
    scheme = scheme.lower()
    parsed = parse_host(rest) if sep and scheme in _DEFAULT_PORTS else None
    own = parse_host(headers.get("host", ""))
    if parsed is None or own is None:
        return False
    if parsed[0] in proxy_names:
        return True
    own_scheme = str(scope.get("scheme", "http"))
    own_port = own[1] or _DEFAULT_PORTS.get(own_scheme)
    return (scheme, parsed[0], parsed[1] or _DEFAULT_PORTS[scheme]) == (own_scheme, own[0], own_port)
