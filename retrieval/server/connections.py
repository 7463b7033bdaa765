"""The HTTP connection handler: uvicorn's h11 protocol, plus a deadline for each request's headers.

uvicorn closes idle kept-alive connections, but waits forever for a request whose
headers never finish (a client that connects and goes quiet, or trickles a byte at
a time), so such connections pile up. Here the headers must be complete within
`header_timeout_s` of the connection opening, or of the first byte of a kept-alive
connection's next request; trickling bytes does not extend the deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers are not complete in time."""

    header_timeout_s = 10.0  # set by `with_header_timeout`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._has_partial_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._is_awaiting_headers():
            self._has_partial_request = True
            self._arm()  # keeps a deadline already running: a trickle cannot push it back
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _is_awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._has_partial_request = False

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self._is_awaiting_headers():
            return
        if self._has_partial_request:  # a client that sent nothing (a browser's spare socket) is closed quietly
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def with_header_timeout(timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (it builds one per connection, from the class alone)."""

    class Protocol(HeaderDeadlineProtocol):
        header_timeout_s = timeout_s

    return Protocol
