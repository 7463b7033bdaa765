"""Concurrent use: searching while another process indexes, and two indexers at once.

The indexers are real `clipdex index` processes (forked from a forkserver that has
imported torch already, see crash_harness). Interleavings are forced with the
write lock and SIGSTOP/SIGCONT, not with sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from conftest import TINY, make_photo
from crash_harness import ForkedCli
from retrieval.library import Library



@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> ForkedCli:
    return ForkedCli(tmp_path_factory.mktemp("concurrency"))


def argv(folder: Path, home: Path) -> list[str]:
    return ["index", str(folder), "--model", "clipdex-tiny", "--batch-size", "2", "--library", str(home)]


def assert_consistent(home: Path) -> None:
    con = sqlite3.connect(home / "catalog.db")
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    with Library.open(home) as lib:
        model = lib.active_model()
        assert model is not None
        assert lib.indexes.get(model, "image").ids().tolist() == lib.catalog.vectors(model.id, "image")[0].tolist()


def test_search_keeps_working_while_another_process_indexes(cli: ForkedCli, tmp_path: Path) -> None:
    photos, home = tmp_path / "photos", tmp_path / "lib"
    for i in range(12):
        make_photo(photos / "first" / f"a{i}.jpg", seed=i)
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
        by_name = {Path(r.path).name: r.id for r in lib.search("x", top=12)}
        kept = by_name["a11.jpg"]
        removed = {by_name[f"a{i}.jpg"] for i in range(4)}
    searches_for = ("a beach at sunset", "a red car", f"item:{kept}")
    for i in range(30):
        make_photo(photos / "second" / f"b{i:02d}.png", seed=100 + i, size=(64, 48))
    for i in range(4):  # removed by the run: their ids must never come back as results
        (photos / "first" / f"a{i}.jpg").unlink()

    searches = dangling = after_removal = 0
    seen_during_run: set[int] = set()
    with Library.open(home) as lib:  # one long-lived reader, like the HTTP server
        proc = cli.start(argv(photos, home))
        cli.wait_for_lock(home / "lock", proc)
        while proc.is_alive():
            # Once the run has committed the removals, no later search may return those items.
            # (A search that began before may, and a look-up after it can then miss the row.)
            removal_committed = not lib.catalog.items(sorted(removed))
            after_removal += removal_committed
            for query in searches_for:
                results = lib.search(query, top=20)
                searches += 1
                ids = [r.id for r in results]
                rows = lib.catalog.items(ids)
                dangling += sum(1 for i in ids if i in removed and removal_committed)
                dangling += sum(1 for i in ids if i not in removed and (i not in rows or rows[i].status != "indexed"))
                seen_during_run.update(ids)
        proc.join()
        assert proc.exitcode == 0, (cli.work / "log.txt").read_text()
        # The same reader picks up the finished run's generation without reopening.
        final = {r.id for r in lib.search("anything", top=1000)}
        model = lib.active_model()
        assert model is not None
        stored = set(lib.catalog.vectors(model.id, "image")[0].tolist())
    print(f"{searches} searches while indexing, {len(seen_during_run)} distinct results, {dangling} dangling")
    assert searches > 0 and after_removal > 0 and dangling == 0
    assert final == stored and len(stored) == 8 + 30
    assert_consistent(home)


def test_simultaneous_indexers_one_runs_the_other_is_refused(cli: ForkedCli, tmp_path: Path) -> None:
    photos, home = tmp_path / "photos", tmp_path / "lib"
    for i in range(10):
        make_photo(photos / f"p{i}.jpg", seed=i)
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    procs = [cli.start(argv(photos, home), log=log) for log in logs]
    winner = _first_to_lock(home / "lock", procs)
    os.kill(winner.pid, signal.SIGSTOP)  # hold the lock while the other one tries
    try:
        loser = procs[1 - procs.index(winner)]
        loser.join()
    finally:
        os.kill(winner.pid, signal.SIGCONT)
    winner.join()
    assert winner.exitcode == 0
    assert loser.exitcode == 1
    message = logs[procs.index(loser)].read_text()
    assert message.strip() == f"error: library is busy (pid {winner.pid}); wait for it to finish and try again"
    assert_consistent(home)


def test_a_lock_left_by_a_killed_indexer_is_taken_over(cli: ForkedCli, tmp_path: Path) -> None:
    photos, home = tmp_path / "photos", tmp_path / "lib"
    for i in range(10):
        make_photo(photos / f"p{i}.jpg", seed=i)
    first = cli.start(argv(photos, home))
    cli.wait_for_lock(home / "lock", first)
    first.kill()
    first.join()
    assert (home / "lock").read_text() == str(first.pid)  # the dead holder's pid is still written there
    second = cli.start(argv(photos, home))
    second.join()
    assert second.exitcode == 0, (cli.work / "log.txt").read_text()
    with Library.open(home) as lib:
        assert lib.status().images == 10
    assert_consistent(home)
    shutil.rmtree(home)


def _first_to_lock(lock: Path, procs: list[object]) -> object:
    """The process that takes the write lock first (polls the pid the holder writes)."""
    pids = {str(p.pid): p for p in procs}  # type: ignore[attr-defined]
    while True:
        try:
            holder = lock.read_text()
        except OSError:
            holder = ""
        if holder in pids:
            return pids[holder]
        if not any(p.is_alive() for p in procs):  # type: ignore[attr-defined]
            raise AssertionError("neither indexer took the lock")
