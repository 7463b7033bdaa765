"""A decoder worker process: `python -m indexer.decode_worker FD SPEC MAX_PIXELS MEMORY_MB`.

It is started as a fresh interpreter (not forked or spawned from the parent's
`__main__`), so any program can index, with or without a main guard, and the
worker imports only Pillow and numpy. It reads (seq, path) from the socket FD
and answers (seq, result) until it reads None or the socket closes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection

from indexer.decode import DecodeFailure, DecodeResult, InputSpec, decode_image


def serve(conn: Connection, spec: InputSpec, max_pixels: int, memory_mb: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        seq, path = task
        try:
            result: DecodeResult = decode_image(path, spec, max_pixels)
        except MemoryError:
            result = DecodeFailure(f"decoder ran out of memory (limit {memory_mb} MB)")
        conn.send((seq, result))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    fd, spec, max_pixels, memory_mb, nice = sys.argv[1:6]
    os.nice(int(nice))
    serve(Connection(int(fd)), InputSpec(**json.loads(spec)), int(max_pixels), int(memory_mb))


if __name__ == "__main__":
    main()
