"""A hostile photo folder: `clipdex index` exits 0 and accounts for every image-named entry.

The run is a real `clipdex index` process. Under root it runs without the
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH capabilities, so a chmod 000 file is as
unreadable to it as to any user (root otherwise reads everything).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from crash_harness import REPO, child_env
from indexer.decode import path_str
from malformed_corpus import EITHER, INDEXED, build
from retrieval.library import Library

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _without_dac_override() -> None:
    """preexec_fn: exec the child without root's permission-bypassing capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def indexed_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[bytes, str], str]:
    work = tmp_path_factory.mktemp("malformed")
    root, home = work / "corpus", work / "lib"
    expect = build(root)
    locked = root / "locked"
    locked.mkdir()
    (locked / "inside.jpg").write_bytes((root / "good" / "orient1.jpg").read_bytes())
    locked.chmod(0)
    entry = "import sys; from cli.app import main; sys.argv[0] = 'clipdex'; main()"
    args = [sys.executable, "-c", entry, "index", str(root), "--model", "clipdex-tiny", "--library", str(home)]
    done = subprocess.run(
        args,
        env=child_env() | {"HF_HOME": str(work / "hf")},
        cwd=REPO,
        capture_output=True,
        timeout=600,  # a FIFO opened by mistake would hang here, not pass
        preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
    )
    locked.chmod(0o755)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return root, home, expect, done.stderr.decode(errors="replace")


def test_every_image_named_entry_is_indexed_or_skipped_with_its_reason(
    indexed_corpus: tuple[Path, Path, dict[bytes, str], str],
) -> None:
    root, home, expect, _ = indexed_corpus
    with Library.open(home) as lib:
        rows = {r.path: r for r in lib.catalog.files_under([os.fsencode(root)])}
        reasons = {i: (row.reason or "") for i, row in lib.catalog.items([r.id for r in rows.values()]).items()}
    assert sorted(rows) == sorted(expect), "every image-named entry has exactly one catalog row"
    wrong = {}
    for path, want in expect.items():
        row = rows[path]
        got = "indexed" if row.status == "indexed" else reasons[row.id]
        if want == EITHER:
            ok = row.status == "indexed" or bool(reasons[row.id])
        elif want == INDEXED:
            ok = row.status == "indexed"
        else:
            ok = row.status == "skipped" and got.startswith(want)
        if not ok:
            wrong[path_str(path)] = (want, got)
    assert wrong == {}
    assert sum(r.status == "indexed" for r in rows.values()) >= sum(w == INDEXED for w in expect.values())


def test_status_errors_lists_every_skipped_file(indexed_corpus: tuple[Path, Path, dict[bytes, str], str]) -> None:
    root, home, expect, _ = indexed_corpus
    result = CliRunner().invoke(app, ["status", "--errors", "--json", "--library", str(home)])
    assert result.exit_code == 0, result.stderr
    listed = {e["path"]: e["reason"] for e in json.loads(result.stdout)["errors"]}
    must_skip = {path_str(p): w for p, w in expect.items() if w not in (INDEXED, EITHER)}
    assert {p: listed.get(p, "")[: len(w)] for p, w in must_skip.items()} == must_skip
    assert all(reason for reason in listed.values())
    text = CliRunner().invoke(app, ["status", "--errors", "--library", str(home)]).stdout
    assert f"skipped   {root / 'special' / 'fifo.jpg'}: not a regular file (a FIFO)" in text


def test_an_unreadable_folder_is_a_warning_not_a_failure(indexed_corpus: tuple[Path, Path, dict[bytes, str], str]) -> None:
    root, _, _, stderr = indexed_corpus
    assert f"warning: {root / 'locked'}: cannot list folder: Permission denied" in stderr


def test_a_second_run_changes_nothing(indexed_corpus: tuple[Path, Path, dict[bytes, str], str]) -> None:
    root, home, _, _ = indexed_corpus
    (root / "bad" / "unreadable.jpg").chmod(0o644)  # now readable (the run below is root): picked up, as changed
    os.utime(root / "bad" / "unreadable.jpg", ns=(1, 1_700_000_000_000_000_000))
    result = CliRunner().invoke(app, ["index", "--json", "--library", str(home)])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("added", "updated", "removed", "skipped")} == {
        "added": 1, "updated": 1, "removed": 0, "skipped": 0,  # the folder is readable now too
    }
