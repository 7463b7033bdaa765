"""A decoder worker process, started by `indexer.workers` as
`python -P -s -c BOOTSTRAP PACKAGE_DIR FD SPEC MAX_PIXELS MEMORY_MB NICE` from `/`.

It is a fresh interpreter (not forked or spawned from the parent's `__main__`), so
any program can index, with or without a main guard, and the worker imports only
Pillow and numpy. Its sys.path holds neither the folder `clipdex` runs in nor the
user's site-packages: a `json.py` lying in a photo folder is never run. It reads
(seq, path) from the socket FD and answers (seq, result) until it reads None or the
socket closes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from indexer import failpoints
from indexer.decode import DecodeFailure, DecodeResult, InputSpec, decode_image


@dataclass(frozen=True)
class WorkerFailure(DecodeFailure):
    """The decoder process, not the file, failed (it crashed, hung or ran out of memory):
    the file may well decode on another run, so it is retried a few times."""


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
        failpoints.hit(failpoints.DECODER_BEFORE_DECODE)
        try:
            result: DecodeResult = decode_image(path, spec, max_pixels)
        except MemoryError:
            result = WorkerFailure(f"decoder ran out of memory (limit {memory_mb} MB)")
        conn.send((seq, result))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    fd, spec, max_pixels, memory_mb, nice = sys.argv[1:6]
    os.nice(int(nice))
    serve(Connection(int(fd)), InputSpec(**json.loads(spec)), int(max_pixels), int(memory_mb))
