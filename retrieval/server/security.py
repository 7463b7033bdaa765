"""The guard in front of every request: Host allow-list, cross-site refusal, token, body size limit, safe headers.

It is plain ASGI so that an oversized upload is refused from its Content-Length,
or while it streams in, before any of it is buffered or spooled to disk.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.server.auth import Auth, Credential
from retrieval.server.errors import CrossSiteRequest, HostNotAllowed, Unauthorized, UploadTooLarge, response_for
from retrieval.server.origins import cross_site_reason
from retrieval.server.pages import EXPIRED, login_page
from retrieval.server.settings import ServerSettings, is_ip_literal, split_host_header

FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and the small form fields beside the file
_OPEN_PATHS = ("/login",)
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not `no-referrer`: with it, browsers send `Origin: null` on the page's own POSTs, which
    # the cross-site check must refuse. `same-origin` still sends nothing to other sites.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",  # JSON answers, errors, redirects; images and static files set their own
}


class Guard:
    """ASGI middleware applying ServerSettings' security rules to every HTTP request.

    `auth` checks the token; None for a server without one.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings, auth: Auth | None) -> None:
        self.app = app
        self.settings = settings
        self.auth = auth
        self.hosts = settings.allowed_host_names()
        self.proxy_names = settings.extra_host_names()
        self.body_limit = settings.max_upload_bytes + FORM_ALLOWANCE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_safe_headers(send)
        refusal = await self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._call_limited(scope, receive, send)

    async def refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request before the app sees it, or None to let it through.

        A wrong token's refusal waits for the failure throttle; nothing else waits.
        """
        headers = Headers(scope=scope)
        raw_host = headers.get("host", "")
        host = split_host_header(raw_host)
        if raw_host and not host:
            return response_for(HostNotAllowed(f"Host {raw_host[:100]!r} is not a valid host[:port]"))
        if host not in self.hosts and not (self.settings.is_wildcard and is_ip_literal(host)):
            shown = host or "(none)"
            why = f"Host {shown} is not served here; start the server with --allow-host {shown}"
            return response_for(HostNotAllowed(why))
        cross_site = cross_site_reason(scope, headers, self.proxy_names)
        if cross_site is not None:
            return response_for(CrossSiteRequest(cross_site))
        if self.auth is not None and scope["path"] not in _OPEN_PATHS:
            credential = self.auth.check(headers)
            if credential is not Credential.VALID:
                return await _unauthorized(self.auth, scope, headers, credential)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.body_limit):
            return response_for(self._too_large())
        return None

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, cutting off a body (sent without a length) once it passes the limit."""
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_limit:
                    too_large = True
                    raise self._too_large()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's reaction to the cut-off body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await response_for(self._too_large())(scope, receive, send)

    def _too_large(self) -> UploadTooLarge:
        mb = self.settings.max_upload_bytes // (1024 * 1024)
        return UploadTooLarge(f"the request body is over the {mb} MB upload limit (--max-upload-mb)")


async def _unauthorized(auth: Auth, scope: Scope, headers: Headers, credential: Credential) -> Response:
    """The 401 (JSON, or the login form for a page visit); a wrong token's first waits its turn."""
    if credential is Credential.WRONG:
        await auth.throttle.wait_after_failure()
    expired = credential is Credential.EXPIRED
    if _is_page_visit(scope, headers):
        return login_page(status_code=401, message=EXPIRED if expired else None)
    if expired:
        return response_for(Unauthorized("your sign-in has expired: log in again at /login"))
    why = "this server needs its token: send `Authorization: Bearer TOKEN` or log in at /login"
    return response_for(Unauthorized(why))


def _is_page_visit(scope: Scope, headers: Headers) -> bool:
    """A browser navigating to a page (answered with the login form, not JSON)."""
    is_page = scope["method"] == "GET" and not scope["path"].startswith("/api/")
    return is_page and "text/html" in headers.get("accept", "")


def _with_safe_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SAFE_HEADERS.items():
                if name not in headers:
                    headers[name] = value
        await send(message)

    return wrapped
