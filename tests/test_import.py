"""Bulk import of precomputed embeddings (.npy + list, parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, brute_force, make_photo
from indexer.errors import InputFileError
from retrieval.library import Library


def unit_rows(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_imported_files_are_searchable_and_not_reencoded_by_a_scan(library: Library, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    paths = [str(make_photo(folder / f"{i}.jpg", seed=i)) for i in range(6)]
    vecs = unit_rows(6) * 3.0  # any scale: import normalises
    report = library.import_embeddings(paths, vecs, model=TINY)
    assert (report.added, report.replaced) == (6, 0)
    assert library.index([folder]).encoded == 0  # size and mtime were recorded on import
    model = library.active_model()
    assert model is not None
    ids = library.catalog.vectors(model.id, "image")[0].tolist()
    item = next(i for i in ids if library.item(i).path == paths[2])  # type: ignore[union-attr]
    query = vecs[2] / np.linalg.norm(vecs[2])
    results = library.search(f"item:{item}", top=6)
    assert results[0].id == item
    assert [r.id for r in results] == [i for i, _ in brute_force(library, query)]


def test_repeated_import_replaces_vectors_and_last_duplicate_wins(library: Library, tmp_path: Path) -> None:
    paths = ["/data/a.jpg", "/data/b.jpg", "/data/a.jpg"]
    vecs = unit_rows(3)
    assert library.import_embeddings(paths, vecs, model=TINY).to_dict()["added"] == 2
    again = library.import_embeddings(["/data/b.jpg"], unit_rows(1, seed=5), model=TINY)
    assert (again.added, again.replaced) == (0, 1)
    model = library.active_model()
    assert model is not None
    ids, stored = library.catalog.vectors(model.id, "image")
    by_path = {library.item(int(i)).path: v for i, v in zip(ids, stored)}  # type: ignore[union-attr]
    np.testing.assert_allclose(by_path["/data/a.jpg"], vecs[2], atol=2e-3)
    np.testing.assert_allclose(by_path["/data/b.jpg"], unit_rows(1, seed=5)[0], atol=2e-3)


def test_mismatched_shapes_are_refused(library: Library) -> None:
    with pytest.raises(InputFileError, match="must pair up"):
        library.import_embeddings(["a", "b"], unit_rows(3), model=TINY)
    with pytest.raises(InputFileError, match="has 64 dimensions|have 64 dimensions"):
        library.import_embeddings(["a"], unit_rows(1, dim=64), model=TINY)


def test_cli_imports_npy_and_parquet(tmp_path: Path) -> None:
    runner = CliRunner()
    np.save(tmp_path / "v.npy", unit_rows(3))
    (tmp_path / "items.txt").write_text("/x/1.jpg\n/x/2.jpg\n/x/3.jpg\n")
    out = runner.invoke(app, ["import", str(tmp_path / "v.npy"), "--items", str(tmp_path / "items.txt"),
                              "--model", "clipdex-tiny", "--json"])
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["added"] == 3
    table = pa.table({"text": ["a red car", "a blue boat"], "embedding": unit_rows(2, seed=9).tolist()})
    pq.write_table(table, tmp_path / "t.parquet")
    out = runner.invoke(app, ["import", str(tmp_path / "t.parquet"), "--texts"])
    assert out.exit_code == 0, out.stderr
    assert out.stdout.startswith("imported 2 new and 0 existing texts for clipdex-tiny@")
    hits = runner.invoke(app, ["search", "text:a red car", "--texts", "--json"])
    assert {h["text"] for h in json.loads(hits.stdout)} == {"a red car", "a blue boat"}
    bad = runner.invoke(app, ["import", str(tmp_path / "v.npy")])
    assert bad.exit_code == 1 and "needs --items" in bad.stderr
