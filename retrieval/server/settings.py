"""How a server runs: bind address, token, allowed hosts and limits, as one frozen value."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from indexer.models import ModelSpec
from retrieval.server.errors import InsecureBind, ServerConfigError

MB = 1024 * 1024
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")


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
        names = {normal_host(self.host)} | {split_host_header(h) for h in self.allow_hosts}
        if self.is_loopback:
            names |= set(_LOOPBACK_NAMES)
        return frozenset(n for n in names if n)

    def check(self) -> None:
        """Raise InsecureBind for a network-reachable bind without a token, ServerConfigError for bad limits."""
        if not self.is_loopback and not self.token:
            raise InsecureBind(
                f"binding {self.host} would expose the library to the network without a password; "
                "pass --token SECRET (or set CLIPDEX_TOKEN), or bind --host 127.0.0.1"
            )
        if not 0 < self.port < 65536:
            raise ServerConfigError(f"--port {self.port} is not a TCP port (1-65535)")
        if self.max_upload_bytes < 1:
            raise ServerConfigError("--max-upload-mb must be at least 1")


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


def split_host_header(value: str) -> str:
    """The name part of a Host header value (`name:port`, `[v6]:port`)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        return normal_host(value[: end + 1]) if end > 0 else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return normal_host(value)
