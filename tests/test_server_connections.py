"""Connections to a real server on 127.0.0.1: requests whose headers never finish are closed, sizes are bounded.

The server is `clipdex serve`'s uvicorn set-up with a short header deadline. The
checks are about behaviour (the server closed the connection, and said 408), not
speed: each socket waits up to WAIT_S, far longer than the deadline, for that.
"""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from retrieval.library import Library
from serverkit import make_library, running_server

DEADLINE_S = 0.5
WAIT_S = 20.0  # only a server that never closes the connection gets anywhere near this


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    lib, _ = make_library(tmp_path_factory.mktemp("connections"))
    try:
        with running_server(lib, header_timeout_s=DEADLINE_S, max_header_bytes=8 * 1024) as port:
            yield port
    finally:
        lib.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def test_a_half_sent_request_line_is_answered_408_and_closed(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /api/v1/sta")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in answer


def test_half_sent_headers_and_silent_connections_are_closed(port: int) -> None:
    socks = [connect(port) for _ in range(20)]
    try:
        for n, sock in enumerate(socks):
            if n % 2:
                sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never the blank line
        answers = [read_until_closed(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers[0::2] == [b""] * 10  # never said anything: closed without an answer
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[1::2])
    with connect(port) as sock:  # and the server still serves
        sock.sendall(request("/api/v1/status", "Connection: close\r\n"))
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_trickling_a_byte_at_a_time_does_not_extend_the_deadline(port: int) -> None:
    trickle = request("/api/v1/status", "X-Pad: " + "a" * 400 + "\r\n")
    with connect(port) as sock:
        closed = False
        for byte in trickle[:-1]:  # never the final byte
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed it while we were sending
                closed = True
                break
            time.sleep(0.05)  # 400 bytes would take 20 s, 40 deadlines
            sock.settimeout(0)
            try:
                closed = sock.recv(65536).startswith(b"HTTP/1.1 408 ")
            except BlockingIOError:
                pass
            sock.settimeout(WAIT_S)
            if closed:
                break
    assert closed


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request("/api/v1/status"))
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHo")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_oversized_headers_are_refused_before_they_end(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 10_000)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")  # at once, not the deadline's 408


def test_a_complete_request_is_served_normally(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request("/api/v1/status", "Connection: close\r\n"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"cache-control: no-store\r\n" in answer.lower()
