"""PostgreSQL specifics: the remembered --db, the advisory writer lock, locks of dead writers.

The catalog, indexing and search tests also run on PostgreSQL: the `library`
fixture is parametrised over both backends (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, make_photo
from crash_harness import REPO, child_env
from indexer.errors import LibraryBusy
from retrieval.library import Library


def test_db_url_is_remembered_and_nothing_but_the_catalog_leaves_the_machine(
    pg_url: str, photos: Path, tmp_path: Path
) -> None:
    home = tmp_path / "lib"
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(photos), "--model", "clipdex-tiny", "--db", pg_url, "--library", str(home)])
    assert result.exit_code == 0, result.stderr
    config = json.loads((home / "config.json").read_text())
    assert config["db"] == pg_url
    result = runner.invoke(app, ["status", "--json", "--errors", "--library", str(home)])  # no --db: remembered
    status = json.loads(result.stdout)
    assert (status["images"], status["skipped"]) == (12, 1)
    assert status["index"]["in_sync"] is True
    assert sorted(p.name for p in home.iterdir()) == ["config.json", "derived", "indexes", "lock"]  # no catalog.db
    result = runner.invoke(app, ["search", "a beach", "--top", "3", "--json", "--library", str(home)])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3


def test_two_machines_on_one_catalog_take_turns(pg_url: str, photos: Path, tmp_path: Path) -> None:
    """Two library folders (two machines: separate lock files) on one PostgreSQL catalog."""
    with Library.open(tmp_path / "a", db=pg_url) as a, Library.open(tmp_path / "b", db=pg_url) as b:
        a.index([photos], model=TINY)
        with a.catalog.writer_lock(4242, "laptop"):
            with pytest.raises(LibraryBusy, match=r"^library is busy \(pid 4242 on laptop\); wait"):
                b.index([photos])
        assert b.index([photos]).encoded == 0  # the lock is free again
        assert sorted(r.id for r in b.search("x", top=50)) == sorted(r.id for r in a.search("x", top=50))


HOLD_LOCK = """
import sys, time
from indexer.catalog import Catalog
lock = Catalog(sys.argv[1]).writer_lock(1, "doomed")
lock.__enter__()
print("holding", flush=True)
time.sleep(600)
"""


def test_the_advisory_lock_of_a_killed_writer_is_released(pg_url: str, photos: Path, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib", db=pg_url) as lib:
        lib.index([photos], model=TINY)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, pg_url], env=child_env(), cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            with pytest.raises(LibraryBusy, match="pid 1 on doomed"):
                lib.index()
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
        make_photo(photos / "after.jpg", seed=31)
        for _ in range(100):  # the server notices the dropped connection within moments
            try:
                report = lib.index()
                break
            except LibraryBusy:
                subprocess.run(["sleep", "0.05"])
        assert report.added == 1
        assert lib.status().images == 13


def test_writer_lock_names_this_host(pg_url: str, tmp_path: Path) -> None:
    with Library.open(tmp_path / "a", db=pg_url) as a, Library.open(tmp_path / "b", db=pg_url) as b:
        with a._writing():
            with pytest.raises(LibraryBusy) as err:
                with b._writing():
                    pass
    assert (err.value.pid, err.value.host) == (os.getpid(), socket.gethostname())
