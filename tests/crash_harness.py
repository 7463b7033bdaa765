"""Kill trials: a real `clipdex index` process SIGKILLed mid-run, then the library checked.

Shared by tests/test_crash.py (a dozen trials) and benchmarks/soak_kill.py (200).

A trial starts `clipdex index` in its own process, kills it with SIGKILL at a
seeded random moment (or lets a failpoint kill it at a named step), and then
checks what a user would get on reopening: a sound SQLite file, FAISS ids equal
to the committed vectors after the automatic catch-up, no duplicate items, no
temp files. A resumed run must then re-encode exactly the files whose batch was
not committed and end identical to an uninterrupted run.

Random trials run the CLI in processes forked from a forkserver that has already
imported torch (an exec'd Python spends ~6 s importing it on 2 busy cores, far
longer than the run being interrupted); failpoint trials exec the CLI afresh.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conftest import TINY, make_photo
from indexer.vector_index import VectorIndex
from retrieval.library import Library

REPO = Path(__file__).resolve().parent.parent
BATCH = 2
FRESH, UPDATE = "fresh", "update"  # index an empty library / bring an indexed one up to date
KILL_TRIES = 4  # a random kill that missed (the run ended first) is retried this often, each time twice as early
_PRELOAD = ["cli.app", "retrieval.library", "indexer.models", "indexer.encode", "indexer.pipeline", "torch", "open_clip", "faiss"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CLIPDEX_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def run_cli(argv: list[str], env: dict[str, str], log: str) -> None:
    """Forkserver child: run the real CLI entry point with `argv` (output to `log`)."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(1)
    from cli.app import main

    sys.argv = ["clipdex", *argv]
    main()


@dataclass(frozen=True)
class Expected:
    """An uninterrupted run's result: display path -> (content hash, status, unit vector or None)."""

    items: dict[str, tuple[str | None, str, np.ndarray | None]]
    seconds: dict[str, float]  # scenario (and scenario-locked: from the lock on) -> uninterrupted run time


@dataclass
class TrialResult:
    seed: int
    scenario: str
    how: str  # "kill at 0.41s", or the failpoint
    exit_code: int | None
    committed: int  # files the killed run encoded and committed
    encoded_on_resume: int
    expected_on_resume: int
    recovery_s: float  # reopen after the kill until the index is caught up
    problems: list[str] = field(default_factory=list)
    finished: bool = False  # the killed run printed its closing summary: the kill came after the work
    tries: int = 1  # runs started until a kill landed

    @property
    def kill_landed(self) -> bool:
        """SIGKILL ended the run before it had finished."""
        return self.exit_code == -9 and not self.finished

    @property
    def passed(self) -> bool:
        return not self.problems


class ForkedCli:
    """Starts `clipdex` processes forked from a forkserver that has imported torch already."""

    def __init__(self, work: Path) -> None:
        self.work = work
        ctx: Any = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        self._ctx = ctx

    def start(self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Any:
        """Start `clipdex ARGV` (output to `log`); return the multiprocessing.Process."""
        args = (argv, child_env() | (env or {}), str(log or self.work / "log.txt"))
        proc = self._ctx.Process(target=run_cli, args=args)
        proc.start()
        return proc

    @staticmethod
    def wait_for_lock(lock: Path, proc: Any) -> float:
        """Wait until `proc` holds the library's write lock (or has exited); return the seconds waited."""
        started = time.monotonic()
        while proc.is_alive():
            try:
                if lock.read_text() == str(proc.pid):
                    break
            except OSError:
                pass
            time.sleep(0.002)
        return time.monotonic() - started


class Harness:
    """A corpus, a pre-indexed template library and the reference result, built once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.corpus = work / "corpus"
        self.template = work / "template"
        self.cli = ForkedCli(work)
        self._build()

    # -- set-up ----------------------------------------------------------------------------

    def _build(self) -> None:
        c = self.corpus
        for i in range(24):  # version 1 of the photo folder
            make_photo(c / "old" / f"p{i:02d}.jpg", seed=i, size=(96, 72))
        with Library.open(self.template) as lib:
            lib.index([c], model=TINY, batch_size=8)
        # Version 2: deletions, moves, edits, new photos and one file that is not an image.
        for i in range(4):
            (c / "old" / f"p{i:02d}.jpg").unlink()
        for i in range(4, 8):
            (c / "moved").mkdir(exist_ok=True)
            (c / "old" / f"p{i:02d}.jpg").rename(c / "moved" / f"p{i:02d}.jpg")
        for i in range(8, 12):
            make_photo(c / "old" / f"p{i:02d}.jpg", seed=100 + i, size=(96, 72))
            os.utime(c / "old" / f"p{i:02d}.jpg", ns=(1, 2_000_000_000_000_000_000 + i))
        for i in range(20):
            make_photo(c / "new" / f"n{i:02d}.png" if i % 3 else c / "new" / f"n{i:02d}.jpg", seed=200 + i, size=(96, 72))
        (c / "new" / "broken.jpg").write_bytes(b"not a jpeg at all")
        self._run_forked(["--help"], None)  # start the forkserver (imports torch) before timing anything
        seconds = {}
        for scenario in (FRESH, UPDATE):
            home = self.work / f"reference-{scenario}"
            argv = self._start(scenario, home)
            started = time.monotonic()
            proc = self.cli.start(argv)
            locked = self.cli.wait_for_lock(home / "lock", proc)
            proc.join()
            code = proc.exitcode
            seconds[scenario] = time.monotonic() - started
            seconds[scenario + "-locked"] = seconds[scenario] - locked
            if code != 0:
                raise RuntimeError(f"reference run ({scenario}) exited {code}: {(home.parent / 'log.txt').read_text()}")
        self.expected = Expected(self._items(self.work / f"reference-{FRESH}"), seconds)
        self.to_encode = {FRESH: self._still_to_encode(self.work / "none"), UPDATE: self._still_to_encode(self.template)}
        other = self._items(self.work / f"reference-{UPDATE}")
        if _compare(other, self.expected.items):
            raise RuntimeError(f"updating and indexing afresh disagree: {_compare(other, self.expected.items)}")

    def _start(self, scenario: str, home: Path) -> list[str]:
        shutil.rmtree(home, ignore_errors=True)
        if scenario == UPDATE:
            shutil.copytree(self.template, home)
        return ["index", str(self.corpus), "--model", "clipdex-tiny", "--batch-size", str(BATCH), "--library", str(home)]

    def _run_forked(
        self, argv: list[str], kill_after_s: float | None, after_lock: bool = False, env: dict[str, str] | None = None
    ) -> int | None:
        """Run the CLI in a forked child; SIGKILL it `kill_after_s` after its start, or after it
        takes the library's write lock (when indexing begins) with `after_lock`."""
        proc = self.cli.start(argv, env)
        if after_lock:
            self.cli.wait_for_lock(Path(argv[-1]) / "lock", proc)
        if kill_after_s is not None:
            proc.join(kill_after_s)
            if proc.is_alive():
                proc.kill()
        proc.join()
        return proc.exitcode

    def _run_exec(self, argv: list[str], failpoint: str) -> int:
        env = child_env() | {"CLIPDEX_FAILPOINT": failpoint}
        entry = "import sys; from cli.app import main; sys.argv[0] = 'clipdex'; main()"
        with open(self.work / "log.txt", "wb") as log:
            return subprocess.run([sys.executable, "-c", entry, *argv], env=env, stdout=log, stderr=log).returncode

    # -- a trial ---------------------------------------------------------------------------

    def trial(
        self, seed: int, failpoint: str | None = None, scenario: str | None = None, exec_cli: bool = False
    ) -> TrialResult:
        """One trial: a seeded random kill, or the failpoint (in an exec'd `clipdex` with `exec_cli`)."""
        rng = random.Random(seed)
        scenario = scenario or rng.choice([FRESH, UPDATE])
        home = self.work / f"trial-{seed}"
        argv = self._start(scenario, home)
        tries = 1
        if failpoint is None:
            # A quarter of the kills fall anywhere in the run (start-up, catalog creation,
            # migrations); the rest after the write lock is taken, where indexing happens.
            after_lock = rng.random() < 0.75
            span = self.expected.seconds[scenario + "-locked" if after_lock else scenario]
            delay = rng.uniform(0.0, span * 1.05)
            for tries in range(1, KILL_TRIES + 1):
                code = self._run_forked(argv, delay, after_lock)
                if (code == -9 and not self._printed_summary()) or tries == KILL_TRIES:
                    break
                delay /= 2  # the run ended before the kill (a quick moment of a busy machine): again, earlier
                argv = self._start(scenario, home)
            how = f"kill at {'lock+' if after_lock else ''}{delay:.3f}s"
        elif exec_cli:
            code = self._run_exec(argv, failpoint)
            how = f"failpoint {failpoint} (exec)"
        else:
            code = self._run_forked(argv, None, env={"CLIPDEX_FAILPOINT": failpoint})
            how = f"failpoint {failpoint}"
        result = TrialResult(seed, scenario, how, code, 0, 0, 0, 0.0, finished=self._printed_summary(),
                             tries=tries)  # fmt: skip
        try:
            self._check_after_kill(home, result)
            self._resume(home, result)
        except Exception as e:  # a trial reports every failure as a problem; the caller asserts
            result.problems.append(f"{type(e).__name__}: {e}")
        if result.passed:
            shutil.rmtree(home, ignore_errors=True)
        return result

    def _printed_summary(self) -> bool:
        """Did the last run print `clipdex index`'s closing line ("added …, encoded N in Ts")?"""
        try:
            return any(line.startswith("added ") and " encoded " in line for line in (self.work / "log.txt").read_text().splitlines())
        except OSError:
            return False

    def _check_after_kill(self, home: Path, result: TrialResult) -> None:
        db = home / "catalog.db"
        if db.exists():
            con = sqlite3.connect(db)  # recovers the WAL like any reader would
            check = con.execute("PRAGMA integrity_check").fetchall()
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            dupes = []
            if "items" in tables:  # else killed while creating the catalog: its DDL rolled back whole
                dupes = con.execute("SELECT count(*) FROM items GROUP BY kind, path, text HAVING count(*) > 1").fetchall()
            elif tables:
                result.problems.append(f"a half-created catalog after the kill: tables {sorted(tables)}")
            con.close()
            if check != [("ok",)]:
                result.problems.append(f"integrity_check after the kill: {check}")
            if dupes:
                result.problems.append(f"duplicate items after the kill: {dupes}")
        started = time.monotonic()
        with Library.open(home) as lib:
            model = lib.active_model()
            index_ids: dict[str, list[int]] = {}
            if model is not None:
                index_ids = {k: lib.indexes.get(model, k).ids().tolist() for k in ("image", "text")}
            result.recovery_s = time.monotonic() - started
            if model is None:
                return
            for kind, ids in index_ids.items():
                stored = lib.catalog.vectors(model.id, kind)[0].tolist()
                on_disk = VectorIndex.load(lib.indexes.path_for(model, kind))
                if ids != stored:
                    result.problems.append(f"{kind} FAISS ids {ids} != committed vectors {stored}")
                if on_disk is None or on_disk.ids().tolist() != stored:
                    result.problems.append(f"{kind} index file on disk does not match the committed vectors")
        leftovers = sorted(p.name for p in home.rglob("*.tmp"))
        if leftovers:
            result.problems.append(f"temp files left after reopening: {leftovers}")

    def _resume(self, home: Path, result: TrialResult) -> None:
        result.expected_on_resume = self._still_to_encode(home)
        result.committed = self.to_encode[result.scenario] - result.expected_on_resume
        with Library.open(home) as lib:
            report = lib.index([self.corpus], model=TINY, batch_size=BATCH)
        result.encoded_on_resume = report.encoded
        if report.encoded != result.expected_on_resume:
            result.problems.append(
                f"resume encoded {report.encoded} files, but {result.expected_on_resume} were not committed"
            )
        diff = _compare(self._items(home), self.expected.items)
        if diff:
            result.problems.append(f"after resuming, the library differs from an uninterrupted run: {diff}")

    def _still_to_encode(self, home: Path) -> int:
        """Files of the reference whose vectors no committed batch holds (under any path)."""
        have: dict[str, tuple[str | None, str, np.ndarray | None]] = {}
        if (home / "catalog.db").exists():
            have = self._items(home)
        hashes = {h for h, status, v in have.values() if status == "indexed" and v is not None}
        return sum(
            1
            for path, (h, status, _) in self.expected.items.items()
            if status == "indexed" and h not in hashes
        )

    def _items(self, home: Path) -> dict[str, tuple[str | None, str, np.ndarray | None]]:
        with Library.open(home) as lib:
            model = lib.active_model()
            ids, vecs = (lib.catalog.vectors(model.id, "image") if model else (np.zeros(0), np.zeros((0, 0))))
            by_id = {int(i): v for i, v in zip(ids, vecs)}
            rows = lib.catalog.files_under(lib.catalog.list_roots())
            meta = lib.catalog.items([r.id for r in rows])
            out: dict[str, tuple[str | None, str, np.ndarray | None]] = {}
            for r in rows:
                path = meta[r.id].path or ""
                if path in out:
                    raise AssertionError(f"duplicate item for {path}")
                out[path] = (r.content_hash, r.status, by_id.get(r.id))
            model_ok = model is None or lib.indexes.get(model, "image").ids().tolist() == sorted(by_id)
            if not model_ok:
                raise AssertionError("FAISS ids differ from the committed vectors")
        return out


def _compare(
    got: dict[str, tuple[str | None, str, np.ndarray | None]],
    want: dict[str, tuple[str | None, str, np.ndarray | None]],
) -> str:
    """'' when both hold the same items (paths, hashes, status) with vectors within cosine 0.999."""
    if set(got) != set(want):
        return f"paths only here: {sorted(set(got) - set(want))}, missing: {sorted(set(want) - set(got))}"
    for path, (h, status, v) in want.items():
        gh, gstatus, gv = got[path]
        if (gh, gstatus) != (h, status):
            return f"{path}: {(gh, gstatus)} != {(h, status)}"
        if (v is None) != (gv is None):
            return f"{path}: vector present {gv is not None}, expected {v is not None}"
        if v is not None and gv is not None and float(v @ gv) < 0.999:
            return f"{path}: cosine {float(v @ gv):.5f} < 0.999"
    return ""
