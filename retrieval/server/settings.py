"""How a server runs: bind address, token, allowed hosts and limits, as one frozen value."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from indexer.models import ModelSpec
from retrieval.server.errors import InsecureBind, ServerConfigError

MB = 1024 * 1024
MIN_NETWORK_TOKEN_CHARS = 16  # a guessable token is no protection once the port is reachable
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
# RFC 3986 host[:port], narrowed: a reg-name of unreserved characters only (no %-escapes,
# no sub-delims such as `!$&'()*+,;=`, which no real host name uses), or a bracketed IPv6 literal.
_HOST_PORT = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::(?P<port>[0-9]{1,5}))?")
_POSITIVE = ("session_lifetime_s", "auth_failure_burst", "auth_failure_interval_s", "header_timeout_s",
             "keep_alive_s", "max_connections", "max_header_bytes")
_MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_hosts: tuple[str, ...] = ()  # extra Host header names (reverse proxy, LAN name)
    max_upload_bytes: int = 20 * MB
    max_upload_pixels: int = 64_000_000  # decompression-bomb guard for uploads and thumbnails
    model: ModelSpec | None = None  # None: the library's active model
    thumbnail_px: int = 400  # longest side of a thumbnail
    session_lifetime_s: int = 7 * 24 * 3600  # a /login cookie is refused this long after it was issued
    auth_failure_burst: int = 5  # wrong tokens answered at once before the slow-down starts
    auth_failure_interval_s: float = 1.0  # then at most one wrong token is answered per interval
    header_timeout_s: float = 10.0  # a connection whose request headers are not complete by then is closed
    keep_alive_s: int = 5  # an idle kept-alive connection is closed after this
    max_connections: int = 100  # beyond this, requests are answered 503 at once
    max_header_bytes: int = 16 * 1024  # request line plus headers; larger is answered 400

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def is_wildcard(self) -> bool:
        return self.host.strip("[]") in _WILDCARDS

    @property
    def url(self) -> str:
        host = self.host.strip("[]")
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]" if host == "::" else host
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    def allowed_host_names(self) -> frozenset[str]:
        """Host header names (without port) that this server answers."""
        names = {normal_host(self.host)} | self.extra_host_names()
        if self.is_loopback:
            names |= set(_LOOPBACK_NAMES)
        return frozenset(n for n in names if n)

    def extra_host_names(self) -> frozenset[str]:
        """The `--allow-host` names, without ports (invalid entries are left out; `check` refuses them)."""
        return frozenset(n for n in map(_allow_host_name, self.allow_hosts) if n)

    def check(self) -> None:
        """Raise InsecureBind for a network-reachable bind without a strong token, ServerConfigError for bad limits."""
        if not self.is_loopback:
            _check_network_token(self.host, self.token)
        if not 0 < self.port < 65536:
            raise ServerConfigError(f"--port {self.port} is not a TCP port (1-65535)")
        if self.max_upload_bytes < 1:
            raise ServerConfigError("--max-upload-mb must be at least 1")
        for entry in self.allow_hosts:
            if not _allow_host_name(entry):
                raise ServerConfigError(f"--allow-host {entry!r} is not a host name or address (like photos.lan:8443)")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"ServerSettings.{name} must be positive, not {getattr(self, name)}")


def _check_network_token(host: str, token: str | None) -> None:
    if not token:
        raise InsecureBind(
            f"binding {host} would expose the library to the network without a password; "
            "pass --token SECRET (or set CLIPDEX_TOKEN), or bind --host 127.0.0.1"
        )
    if len(token) < MIN_NETWORK_TOKEN_CHARS:
        raise InsecureBind(
            f"binding {host} needs a token of at least {MIN_NETWORK_TOKEN_CHARS} characters "
            f"(this one has {len(token)}); make one with: {_MAKE_TOKEN}"
        )


def is_loopback(host: str) -> bool:
    name = normal_host(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(normal_host(host))
    except ValueError:
        return False
    return True


def normal_host(host: str) -> str:
    """`Example.COM.` → `example.com`; `[::1]` → `::1`."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_host(value: str) -> tuple[str, int | None] | None:
    """A Host header value (`name`, `name:port`, `[v6]:port`) as (normal name, port), or None if it is not one.

    `localhost:8000@evil.example`, `a:b:c`, `[not-v6]` and `name:99999` are all None.
    """
    match = _HOST_PORT.fullmatch(value.strip())
    if match is None:
        return None
    name, port = match["name"], match["port"]
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    if port is not None and int(port) > 65535:
        return None
    return (normal_host(name), int(port) if port is not None else None) if normal_host(name) else None


def split_host_header(value: str) -> str:
    """The name part of a Host header value (`name:port`, `[v6]:port`); "" when the value is not a valid host."""
    parsed = parse_host(value)
    return parsed[0] if parsed else ""


def _allow_host_name(entry: str) -> str:
    """An `--allow-host` entry's name: a Host header value, or a bare IPv6 address as people write them."""
    return normal_host(entry) if ":" in entry and is_ip_literal(entry) else split_host_header(entry)
