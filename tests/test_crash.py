"""Crash safety: a real `clipdex index` SIGKILLed at random moments and at every failpoint.

After each kill the reopened library must be sound and consistent, and a resumed
run must re-encode only what was not committed and end identical to an
uninterrupted run. `benchmarks/soak_kill.py` runs 200 of these trials.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from crash_harness import FRESH, REPO, UPDATE, Harness, TrialResult, child_env
from retrieval.library import Library
from indexer import failpoints

RANDOM_SEEDS = range(1, 13)
# (point, the hit that kills, scenario): each stops a different step of a real run.
FAILPOINTS = [
    (f"{failpoints.CATALOG_MID_BATCH}:3", FRESH),
    (f"{failpoints.CATALOG_BEFORE_COMMIT}:2", UPDATE),
    (f"{failpoints.CATALOG_AFTER_COMMIT}:4", FRESH),
    (f"{failpoints.INDEX_AFTER_TEMP_WRITE}:1", UPDATE),
    (f"{failpoints.INDEX_AFTER_REPLACE}:1", FRESH),
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    # One thread here: the killed runs use the other core, and two torch threads
    # competing with them for one core run many times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Harness(tmp_path_factory.mktemp("crash"))
    finally:
        torch.set_num_threads(threads)


def explain(r: TrialResult) -> str:
    return f"seed {r.seed} ({r.scenario}, {r.how}, exit {r.exit_code}): " + "; ".join(r.problems)


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_sigkill_at_a_random_moment(harness: Harness, seed: int) -> None:
    result = harness.trial(seed)
    assert result.kill_landed, f"the kill came after the run ended: {explain(result)}, tries {result.tries}"
    assert result.passed, explain(result)
    assert result.encoded_on_resume == result.expected_on_resume


@pytest.mark.parametrize("point, scenario", FAILPOINTS)
def test_sigkill_at_each_failpoint(harness: Harness, point: str, scenario: str) -> None:
    # The first runs as a user runs clipdex: a fresh exec of the entry point.
    exec_cli = point == FAILPOINTS[0][0]
    result = harness.trial(100, failpoint=point, scenario=scenario, exec_cli=exec_cli)
    assert result.exit_code == -9, f"the failpoint {point} was never reached"
    assert result.kill_landed, f"the failpoint {point} killed a run that had printed its summary"
    assert result.passed, explain(result)


def test_every_failpoint_is_exercised() -> None:
    assert sorted(p.split(":")[0] for p, _ in FAILPOINTS) == sorted(failpoints.POINTS)


def test_failpoint_spec_is_checked() -> None:
    assert failpoints.parse("catalog.after_commit:3") == ("catalog.after_commit", 3)
    with pytest.raises(failpoints.FailpointError, match="unknown point"):
        failpoints.parse("catalog.after_comit")
    with pytest.raises(failpoints.FailpointError, match="whole number"):
        failpoints.parse("catalog.after_commit:0")


KILL_IN_MIGRATION = """
import os, signal, sys
from sqlalchemy import event
from indexer import schema
engine = schema.make_engine(sys.argv[1])
created = 0
@event.listens_for(engine, "before_cursor_execute")
def kill_at_the_fourth_table(conn, cursor, statement, *args):
    global created
    if statement.lstrip().upper().startswith("CREATE TABLE"):
        created += 1
        if created == 4:
            os.kill(os.getpid(), signal.SIGKILL)
schema.upgrade(engine)
"""


def test_kill_while_the_catalog_is_being_created_leaves_nothing_half_made(tmp_path: Path) -> None:
    """The soak found kills landing here: the migration's DDL must roll back whole."""
    home = tmp_path / "lib"
    home.mkdir()
    url = f"sqlite:///{home / 'catalog.db'}"
    done = subprocess.run([sys.executable, "-c", KILL_IN_MIGRATION, url], env=child_env(), cwd=REPO)
    assert done.returncode == -9
    con = sqlite3.connect(home / "catalog.db")
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == []
    con.close()
    with Library.open(home) as lib:
        assert lib.catalog.check_integrity(full=True) == [] and lib.status().images == 0
