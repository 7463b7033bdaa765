"""Bulk import of precomputed embeddings (.npy + list, parquet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

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


# -- every row is checked before anything is written ------------------------------------------

runner = CliRunner()
PATHS = ["/x/1.jpg", "/x/2.jpg", "/x/3.jpg"]


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), result.exception  # an error line, not a traceback
    return result.exit_code, result.stdout, result.stderr


def save_npy(tmp_path: Path, vectors: np.ndarray, items: list[str] = PATHS) -> list[str]:
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in items))
    return [str(tmp_path / "v.npy"), "--items", str(tmp_path / "items.txt")]


def stored_vectors(home: Path) -> dict[str, bytes]:
    """Every image vector of the library, by path, as the exact stored values."""
    with Library.open(home) as lib:
        model = lib.active_model()
        assert model is not None
        ids, vecs = lib.catalog.vectors(model.id, "image")
        return {lib.item(int(i)).path: v.tobytes() for i, v in zip(ids, vecs)}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def imported_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library whose three images got good vectors by import; the refused imports below leave it as it is."""
    work = tmp_path_factory.mktemp("imported")
    code, _, err = cli("import", *save_npy(work, unit_rows(3)), "--model", "clipdex-tiny", "--library", str(work / "lib"))
    assert code == 0, err
    return work / "lib"


@pytest.fixture
def three_imported(imported_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The vectors of `imported_home`, which is this test's CLIPDEX_HOME."""
    monkeypatch.setenv("CLIPDEX_HOME", str(imported_home))
    return stored_vectors(imported_home)


def with_value(row: int, col: int, value: float, dtype: type = np.float32, n: int = 3) -> np.ndarray:
    vecs = unit_rows(n, seed=7).astype(dtype)
    vecs[row, col] = value
    return vecs


@pytest.mark.parametrize(
    "vectors, message",
    [
        (with_value(1, 5, np.nan), "error: row 1 (counting from 0: '/x/2.jpg') holds nan at column 5; nothing was imported"),
        (with_value(2, 0, np.inf), "error: row 2 (counting from 0: '/x/3.jpg') holds inf at column 0; nothing was imported"),
        (with_value(0, 3, -np.inf, np.float16), "error: row 0 (counting from 0: '/x/new.jpg') holds -inf at column 3;"),
        (with_value(0, 9, 1e200, np.float64), "error: row 0 (counting from 0: '/x/new.jpg') holds 1e+200, beyond the float32 range"),
        (with_value(2, 9, -1e39, np.float64), "error: row 2 (counting from 0: '/x/3.jpg') holds 1e+39, beyond the float32 range"),
    ],
    ids=["nan", "inf", "float16-inf", "1e200", "beyond-float32"],
)
def test_a_non_finite_or_overflowing_row_rejects_the_whole_file(
    tmp_path: Path, imported_home: Path, three_imported: dict[str, bytes], vectors: np.ndarray, message: str
) -> None:
    items = ["/x/new.jpg", "/x/2.jpg", "/x/3.jpg"]  # a new path and two that already have good vectors
    code, out, err = cli("import", *save_npy(tmp_path, vectors, items))
    assert code == 1 and out == ""
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert stored_vectors(imported_home) == three_imported  # nothing replaced, nothing added
    code, out, _ = cli("status", "--json")
    assert json.loads(out)["images"] == 3 and json.loads(out)["index"]["in_sync"] is True


def test_a_bad_parquet_row_changes_nothing(tmp_path: Path, imported_home: Path, three_imported: dict[str, bytes]) -> None:
    vecs = unit_rows(3, seed=3).tolist()
    vecs[2][100] = float("nan")
    pq.write_table(pa.table({"path": PATHS, "embedding": vecs}), tmp_path / "e.parquet")
    code, _, err = cli("import", str(tmp_path / "e.parquet"))
    assert code == 1 and err.startswith("error: row 2 (counting from 0: '/x/3.jpg') holds nan at column 100"), err
    assert stored_vectors(imported_home) == three_imported


def test_huge_and_tiny_rows_keep_their_direction(tmp_path: Path, private_home: Path) -> None:
    """float32 rows near 1e30 overflow a float32 norm, float64 rows near 1e-300 underflow float32: both are fine vectors."""
    direction = unit_rows(2, seed=11)
    big = direction[0] * np.float32(1e30)  # squares overflow float32
    tiny = direction[1].astype(np.float64) * 1e-300  # rounds to zero in float32
    code, _, err = cli("import", *save_npy(tmp_path, np.stack([big.astype(np.float64), tiny]), PATHS[:2]), "--model", "clipdex-tiny")
    assert code == 0, err
    stored = {p: np.frombuffer(v, dtype=np.float32) for p, v in stored_vectors(private_home).items()}
    np.testing.assert_allclose(stored["/x/1.jpg"], direction[0], atol=2e-3)
    np.testing.assert_allclose(stored["/x/2.jpg"], direction[1], atol=2e-3)


def parquet_file(tmp_path: Path, table: pa.Table) -> list[str]:
    pq.write_table(table, tmp_path / "e.parquet")
    return [str(tmp_path / "e.parquet")]


GOOD = unit_rows(3, seed=4).tolist()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: save_npy(t, np.full((3, 128), "0.5")), "error: the vectors in {t}/v.npy hold <U3 values, not numbers"),
        (lambda t: save_npy(t, unit_rows(3).astype(np.complex64) * 1j),
         "error: the vectors in {t}/v.npy are complex numbers (complex64)"),
        (lambda t: parquet_file(t, pa.table({"path": PATHS, "embedding": [GOOD[0], GOOD[1][:100], GOOD[2]]})),
         "error: {t}/e.parquet: row 1 (counting from 0) has 100 values, row 0 has 128"),
        (lambda t: parquet_file(t, pa.table({"path": PATHS, "embedding": [GOOD[0], None, GOOD[2]]})),
         "error: {t}/e.parquet: row 1 (counting from 0) has no embedding (null)"),
        (lambda t: parquet_file(t, pa.table({"path": PATHS, "embedding": [GOOD[0], GOOD[1], GOOD[2][:-1] + [None]]})),
         "error: {t}/e.parquet: row 2 (counting from 0) has a null value in its embedding"),
        (lambda t: parquet_file(t, pa.table({"path": PATHS, "embedding": [[str(x) for x in row] for row in GOOD]})),
         "error: {t}/e.parquet: column 'embedding' holds lists of string, not lists of numbers"),
        (lambda t: parquet_file(t, pa.table({"path": [PATHS[0], None, PATHS[2]], "embedding": GOOD})),
         "error: {t}/e.parquet: row 1 (counting from 0) has no path (null)"),
        (lambda t: parquet_file(t, pa.table({"path": [1, 2, 3], "embedding": GOOD})),
         "error: {t}/e.parquet: column 'path' holds int64, not strings"),
        (lambda t: parquet_file(t, pa.table({"path": ["/x/1.jpg", "/x/a\x00b.jpg", "/x/3.jpg"], "embedding": GOOD})),
         "error: row 1 (counting from 0: '/x/a\\x00b.jpg') holds a NUL character"),
    ],
    ids=["npy-strings", "npy-complex", "ragged", "null-row", "null-value", "string-values", "null-path", "int-paths", "nul-in-path"],
)
def test_malformed_embedding_files_are_one_error_line(
    tmp_path: Path, imported_home: Path, three_imported: dict[str, bytes], make: Callable[[Path], list[str]], message: str
) -> None:
    code, out, err = cli("import", *make(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith(message.format(t=tmp_path)) and len(err.splitlines()) == 1, err
    assert stored_vectors(imported_home) == three_imported
