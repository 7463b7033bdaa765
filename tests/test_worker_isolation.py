"""Decoder workers run only trusted code, and a worker that dies costs its file a retry, not the file.

A module lying in the folder `clipdex index` runs from (a `json.py` beside some
downloads) must never be imported by a decoder. A decoder that crashes (the OOM killer
included) or hangs is not the file's fault: the next runs retry the file, up to
three runs in a row, and only then is it skipped until it changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, make_photo
from indexer import failpoints
from retrieval.library import Library

PLANTED = ("json", "numpy", "PIL", "resource")  # each imported by every decoder worker
CRASHED = "decoder crashed (exit -9)"
CRASH_POINT = "decoder.before_decode"  # failpoints.DECODER_BEFORE_DECODE
TRIES = 3  # indexer.pipeline.MAX_DECODE_TRIES, spelled out: the README promises three


def plant(folder: Path) -> None:
    """Modules that leave a marker file when imported, then fail the import."""
    for name in PLANTED:
        (folder / f"{name}.py").write_text(
            "import os\n"
            f"open(os.path.join({str(folder)!r}, 'imported-{name}'), 'w').close()\n"
            f"raise ImportError('planted {name}.py was imported')\n"
        )


def test_modules_in_the_current_folder_never_run_in_a_decoder(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "downloads"
    cwd.mkdir()
    plant(cwd)
    monkeypatch.chdir(cwd)
    # A leading ':' (from `PYTHONPATH=$PYTHONPATH:...` with it unset) is an entry Python reads
    # as "the current folder": -P alone would not keep that one out.
    monkeypatch.setenv("PYTHONPATH", os.pathsep + os.environ.get("PYTHONPATH", ""))
    home = tmp_path / "lib"
    result = CliRunner().invoke(app, ["index", str(photos), "--model", "clipdex-tiny", "--library", str(home)])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in cwd.glob("imported-*")) == []
    with Library.open(home) as lib:
        assert lib.catalog.skipped() == [(str(photos / "home" / "broken.jpg"), "not a supported image format")]
        assert lib.status().images == 12


def index(home: Path, root: Path | None = None, crash: bool = False) -> tuple[int, int, int]:
    """Index `root` (or rescan) with decoders that crash or not; return (updated, skipped, encoded).

    A retried file counts as updated when it decodes, as skipped when it fails again.
    """
    if crash:
        os.environ[failpoints.ENV] = CRASH_POINT
    try:
        with Library.open(home) as lib:
            report = lib.index([root] if root else None, model=TINY if root else None)
    finally:
        os.environ.pop(failpoints.ENV, None)
        failpoints.disarm()
    return report.updated, report.skipped, report.encoded


def skipped(home: Path) -> list[tuple[str, str]]:
    with Library.open(home) as lib:
        return lib.catalog.skipped()


def test_a_crashed_decoder_is_retried_on_the_next_run(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    paths = [make_photo(root / f"p{i}.jpg", seed=i) for i in range(3)]
    broken = root / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    home = tmp_path / "lib"

    assert index(home, root, crash=True) == (0, 4, 0)
    retry = f"{CRASHED}; retried on the next run (try 1 of {TRIES})"
    assert skipped(home) == [(str(p), retry) for p in [broken, *paths]]

    assert index(home) == (3, 1, 3)  # the crash is gone: every file is tried again, unchanged
    assert skipped(home) == [(str(broken), "not a supported image format")]
    with Library.open(home) as lib:
        assert lib.status().images == 3
        assert sorted(r.path for r in lib.search("anything", top=10)) == [str(p) for p in paths]
    assert index(home) == (0, 0, 0)  # a file that cannot decode waits until it changes


def test_a_decoder_that_keeps_crashing_gives_up_after_the_bound(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    photo = make_photo(root / "p.jpg", seed=1)
    home = tmp_path / "lib"
    assert index(home, root, crash=True) == (0, 1, 0)
    for n in range(2, TRIES):
        assert index(home, crash=True) == (0, 1, 0)
        assert skipped(home) == [(str(photo), f"{CRASHED}; retried on the next run (try {n} of {TRIES})")]
    assert index(home, crash=True) == (0, 1, 0)
    gave_up = f"{CRASHED} on {TRIES} runs in a row; retried only when the file changes"
    assert skipped(home) == [(str(photo), gave_up)]

    assert index(home) == (0, 0, 0)  # not retried any more, though decoders work again
    assert skipped(home) == [(str(photo), gave_up)]
    make_photo(photo, seed=2)  # the file changes: it gets a fresh count, and decodes
    assert index(home) == (1, 0, 1)
    assert skipped(home) == []
