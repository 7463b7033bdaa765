"""Decode in worker processes, overlapped with inference, with crashes and hangs contained.

`DecodePool.decode(paths)` starts decoding at once and yields results in input order
while the workers (fresh `indexer.decode_worker` processes) run ahead of the consumer by
a bounded number of files, so decoding continues while the main process encodes. Each
worker runs the same pure `indexer.decode.decode_image`. A worker that crashes, exceeds
its memory limit or hangs past the time limit is replaced, and its file is recorded as a
`WorkerFailure` with the reason; the run goes on.

Workers start from `/` with `-P -s`: the folder `clipdex` runs in (where a stray or
planted `json.py` or `numpy.py` may lie) and the user's site-packages are not on
their sys.path, and `indexer` is loaded from the folder this package was loaded from.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from typing import Iterable, Iterator

from indexer.decode import DEFAULT_MAX_PIXELS, DecodeResult, InputSpec
from indexer.decode_worker import WorkerFailure

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 4096
_PER_WORKER_QUEUE = 4  # files handed to a worker ahead of time, so it never waits on the parent
# A decoder does no linear algebra: numpy's BLAS thread pool would only cost each worker
# ~0.1 s of CPU to start (0.23 s of CPU per worker start, 0.14 s with one thread: measured)
# and threads that compete with the encoder for the cores.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # this `indexer` package, for the workers
# A worker's first lines. `-m indexer.decode_worker` would put the current folder first on
# sys.path; instead `indexer` is imported from _PACKAGE_DIR (argv[1]) by file location, so an
# editable install, a PYTHONPATH checkout and site-packages all give the parent's own code.
_BOOTSTRAP = """
import importlib.util, os, sys
folder = sys.argv.pop(1)
spec = importlib.util.spec_from_file_location("indexer", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
sys.modules["indexer"] = package = importlib.util.module_from_spec(spec)
spec.loader.exec_module(package)
from indexer.decode_worker import main
main()
"""


@dataclass(frozen=True)
class PoolConfig:
    workers: int = 0  # 0: one per CPU core
    prefetch: int = 256  # decoded results allowed to wait for the consumer
    timeout_s: float = DEFAULT_TIMEOUT_S  # per file
    memory_mb: int = DEFAULT_MEMORY_MB  # address-space limit of each worker
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Decoders run at the lowest CPU priority: the encoder never waits for a core they
    # hold, and they take every cycle it leaves (1.12x images/s on 2 cores, measured).
    nice: int = 19

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)))


class _Worker:
    """One decoder process and the files queued on it."""

    def __init__(self, spec: InputSpec, cfg: PoolConfig) -> None:
        parent, child = socket.socketpair()
        args = [json.dumps(asdict(spec)), str(cfg.max_pixels), str(cfg.memory_mb), str(cfg.nice)]
        # -P: no script or current folder on sys.path; -s: no user site-packages. Not -I, which
        # would drop PYTHONPATH too. cwd "/": an empty or relative PYTHONPATH entry, which
        # Python resolves against the current folder, cannot reach the user's folder either.
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-s", "-c", _BOOTSTRAP, _PACKAGE_DIR, str(child.fileno()), *args],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            cwd="/",
            env={**os.environ, **_ONE_THREAD},
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.tasks: deque[tuple[int, bytes | str, float]] = deque()  # (seq, path, started at)

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.is_alive():
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.conn.close()


class DecodePool:
    """A fixed set of decoder processes for one input geometry."""

    def __init__(self, spec: InputSpec, config: PoolConfig = PoolConfig()) -> None:
        self.spec = spec
        self.config = config
        self._workers = [_Worker(spec, config) for _ in range(config.worker_count)]
        self.restarts = 0

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self._workers:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            w.stop()
        self._workers = []

    def decode(self, paths: Iterable[bytes | str]) -> DecodeStream:
        """Start decoding every path now; the stream yields results in order as soon as each
        is ready (closing it, or reaching its end, stops the run)."""
        return DecodeStream(_Run(self, [_absolute(p) for p in paths]))  # workers run from "/"

    def _replace(self, index: int) -> None:
        self._workers[index].stop()
        self._workers[index] = _Worker(self.spec, self.config)
        self.restarts += 1


class DecodeStream:
    """The results of one `decode` call, in input order. Decoding starts when it is made, so the
    caller can do other work (open a model) while the first files decode."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._thread = threading.Thread(target=run.pump, name="clipdex-decode", daemon=True)
        self._thread.start()
        self._results = run.results()

    def __iter__(self) -> DecodeStream:
        return self

    def __next__(self) -> DecodeResult:
        try:
            return next(self._results)
        except BaseException:
            self.close()  # the end, a worker error or an interrupt: stop the pump
            raise

    def close(self) -> None:
        """Stop the run: files in flight are abandoned, the pump thread ends."""
        self._run.stop()
        self._thread.join()


class _Run:
    """One `decode` call: a pump thread feeds workers and collects; the caller consumes."""

    def __init__(self, pool: DecodePool, paths: list[bytes | str]) -> None:
        self.pool = pool
        self.paths = paths
        self.done: dict[int, DecodeResult] = {}
        self.next_out = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.error: BaseException | None = None

    def results(self) -> Iterator[DecodeResult]:
        while self.next_out < len(self.paths):
            with self.cond:
                while self.next_out not in self.done and self.error is None:
                    self.cond.wait(timeout=1.0)
                if self.error is not None:
                    raise self.error
                result = self.done.pop(self.next_out)
                self.next_out += 1
                self.cond.notify_all()
            yield result

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def pump(self) -> None:
        try:
            self._pump()
        except BaseException as e:  # surfaced to the consumer, never swallowed
            with self.cond:
                self.error = e
                self.cond.notify_all()

    def _pump(self) -> None:
        pool, cfg = self.pool, self.pool.config
        next_in = 0
        while not self.stopping:
            with self.cond:
                window = self.next_out + cfg.prefetch
            workers = pool._workers
            for w in workers:
                while next_in < len(self.paths) and next_in < window and len(w.tasks) < _PER_WORKER_QUEUE:
                    w.conn.send((next_in, self.paths[next_in]))
                    w.tasks.append((next_in, self.paths[next_in], time.monotonic()))
                    next_in += 1
            if all(not w.tasks for w in workers):
                if next_in >= len(self.paths):
                    return
                with self.cond:  # the consumer is behind: wait for room in the window
                    self.cond.wait(timeout=0.05)
                continue
            ready = wait([w.conn for w in workers if w.tasks], timeout=0.2)
            for i, w in enumerate(list(workers)):
                if w.conn in ready:
                    self._collect(i, w)
            self._enforce_timeouts()

    def _collect(self, index: int, w: _Worker) -> None:
        try:
            while w.tasks and w.conn.poll():
                seq, result = w.conn.recv()
                w.tasks.popleft()
                if w.tasks:  # the next queued file starts now: its clock starts now
                    s, path, _ = w.tasks[0]
                    w.tasks[0] = (s, path, time.monotonic())
                self._deliver(seq, result)
        except (EOFError, OSError):
            pass
        if w.tasks and not w.is_alive():
            self._fail_head(index, f"decoder crashed (exit {w.proc.returncode})")

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for i, w in enumerate(list(self.pool._workers)):
            # The head task is the one running: later ones are merely queued behind it.
            if w.tasks and now - w.tasks[0][2] > self.pool.config.timeout_s:
                self._fail_head(i, f"decoder timed out after {self.pool.config.timeout_s:g}s")

    def _fail_head(self, index: int, reason: str) -> None:
        """The worker's current file failed; its queued files go to the replacement."""
        w = self.pool._workers[index]
        seq, _, _ = w.tasks.popleft()
        self._deliver(seq, WorkerFailure(reason))
        queued = list(w.tasks)
        self.pool._replace(index)
        fresh = self.pool._workers[index]
        for s, path, _ in queued:
            fresh.conn.send((s, path))
            fresh.tasks.append((s, path, time.monotonic()))

    def _deliver(self, seq: int, result: DecodeResult) -> None:
        with self.cond:
            self.done[seq] = result
            self.cond.notify_all()


def _absolute(path: bytes | str) -> bytes | str:
    """`path` joined to the current folder when relative (not normalised: `..` stays as the kernel sees it)."""
    if os.path.isabs(path):
        return path
    return os.path.join(os.getcwdb(), path) if isinstance(path, bytes) else os.path.join(os.getcwd(), path)
