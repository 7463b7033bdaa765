"""A library made by the first clipdex (schema revision 0001) opens in this one.

tests/fixtures/v1-library was written by tests/fixtures/make_v1_library.py with
plain SQL against revision 0001, so it keeps testing the upgrade path as
migrations are added.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import brute_force
from indexer import schema
from indexer.errors import ModelNotAvailable
from retrieval.library import Library

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1-library"


def test_the_fixture_is_the_first_schema() -> None:
    con = sqlite3.connect(f"file:{FIXTURE / 'catalog.db'}?mode=ro", uri=True)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
    con.close()


def test_a_first_schema_library_opens_searches_and_keeps_its_items(tmp_path: Path) -> None:
    home = tmp_path / "old-lib"
    shutil.copytree(FIXTURE, home)
    with Library.open(home) as lib:
        assert lib.catalog.catalog_id == "0001f1x7u2e0000000000000000v1"
        assert lib.catalog.check_integrity(full=True) == []
        status = lib.status()
        assert (status.images, status.texts, status.skipped) == (3, 1, 0)
        assert status.roots == [{"path": "/clipdex-fixture/photos", "exists": False}]
        assert lib.item_file(2) == b"/clipdex-fixture/photos/caf\xe9.jpg"  # bytes survive the upgrade

        model = lib.active_model()
        assert model is not None and model.name == "clipdex-tiny"
        query = lib.catalog.vectors(model.id, "text")[1][0]  # (D,)
        results = lib.search("item:4", top=3)
        assert [r.id for r in results] == [i for i, _ in brute_force(lib, query)]
        np.testing.assert_allclose([r.score for r in results], [s for _, s in brute_force(lib, query)], atol=1e-5)
        assert [r.id for r in lib.search("item:4", top=1, texts=True)] == [4]

        # The fixture was indexed with the seeded clipdex-tiny that trained weights replaced:
        # writing with it is refused clearly rather than mixing two models' vectors.
        with pytest.raises(ModelNotAvailable, match="no longer loads with the same weights"):
            lib.index()

    con = sqlite3.connect(home / "catalog.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(schema.HEAD_REVISION,)]
    con.close()
    assert json.loads((home / "config.json").read_text())["catalog_id"] == "0001f1x7u2e0000000000000000v1"


def test_files_skipped_for_a_decoder_failure_before_0002_are_retried(tmp_path: Path) -> None:
    """Revision 0001 skipped a file whose decoder crashed, hung or ran out of memory until the
    file changed; the upgrade counts one try for each, so the next run retries them."""
    home = tmp_path / "old-lib"
    shutil.copytree(FIXTURE, home)
    reasons = {
        b"/clipdex-fixture/photos/a.jpg": "decoder crashed (exit -11)",
        b"/clipdex-fixture/photos/b.jpg": "decoder timed out after 60s",
        b"/clipdex-fixture/photos/c.jpg": "decoder ran out of memory (limit 4096 MB)",
        b"/clipdex-fixture/photos/d.jpg": "not a supported image format",
        b"/clipdex-fixture/photos/e.jpg": "out of memory while decoding",  # the file is too big for the limit
    }
    con = sqlite3.connect(home / "catalog.db")
    con.executemany(
        "INSERT INTO items (kind, path, display_path, size, mtime_ns, status, reason, updated_at) "
        "VALUES ('image', ?, ?, 10, 1700000000000000000, 'skipped', ?, 0)",
        [(path, path.decode(), reason) for path, reason in reasons.items()],
    )
    con.commit()
    con.close()
    with Library.open(home) as lib:
        tries = {row.path: row.decode_tries for row in lib.catalog.files_under([b"/clipdex-fixture"])}
    assert tries == {
        b"/clipdex-fixture/photos/beach.jpg": 0,
        b"/clipdex-fixture/photos/caf\xe9.jpg": 0,
        b"/clipdex-fixture/photos/forest.png": 0,
        b"/clipdex-fixture/photos/a.jpg": 1,
        b"/clipdex-fixture/photos/b.jpg": 1,
        b"/clipdex-fixture/photos/c.jpg": 1,
        b"/clipdex-fixture/photos/d.jpg": 0,
        b"/clipdex-fixture/photos/e.jpg": 0,
    }
