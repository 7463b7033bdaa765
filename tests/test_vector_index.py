"""The FAISS index is derived data: stale, damaged or foreign files are caught up or rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from conftest import TINY, make_photo
from indexer.vector_index import IndexTag, VectorIndex
from retrieval.library import Library


def index_file(lib: Library) -> Path:
    model = lib.active_model()
    assert model is not None
    return lib.indexes.path_for(model, "image")


def all_ids(lib: Library) -> list[int]:
    return sorted(r.id for r in lib.search("anything", top=100))


def test_stale_index_is_brought_up_to_date_on_open(library: Library, photos: Path, tmp_path: Path) -> None:
    library.index([photos], model=TINY)
    old = tmp_path / "old.faiss"
    shutil.copy(index_file(library), old)
    make_photo(photos / "new" / "fresh.jpg", seed=300)
    (photos / "trip" / "beach7.jpg").unlink()
    library.index()
    expected = all_ids(library)
    library.close()
    shutil.copy(old, index_file(library))  # as if the last save never happened

    reopened = Library.open(library.home)
    assert reopened.status().index["in_sync"] is False
    assert all_ids(reopened) == expected
    assert reopened.status().index["in_sync"] is True
    reopened.close()


def test_truncated_or_bit_flipped_index_is_rebuilt(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    expected = all_ids(library)
    path = index_file(library)
    data = bytearray(path.read_bytes())
    for damage in (bytes(data[: len(data) // 2]), bytes(data[:-40]) + bytes([data[-40] ^ 1]) + bytes(data[-39:])):
        path.write_bytes(damage)
        fresh = Library.open(library.home)
        assert fresh.status().index["in_sync"] is False
        assert all_ids(fresh) == expected
        fresh.close()


def test_index_file_from_another_catalog_is_rebuilt(library: Library, photos: Path, tmp_path: Path) -> None:
    library.index([photos], model=TINY)
    other = Library.open(tmp_path / "other-lib")
    make_photo(tmp_path / "solo" / "a.jpg", seed=9)
    other.index([tmp_path / "solo"], model=TINY)
    shutil.copy(index_file(other), index_file(library))
    fresh = Library.open(library.home)
    assert len(all_ids(fresh)) == 12
    fresh.close()
    other.close()


def test_saves_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    idx = VectorIndex(IndexTag("cat", "m@1", "image", 7, 4))
    vecs = np.eye(4, dtype=np.float32)
    idx.add(np.array([10, 11, 12, 13]), vecs)
    target = tmp_path / "ix" / "a.faiss"
    idx.save(target)
    assert [p.name for p in target.parent.iterdir()] == ["a.faiss"]
    loaded = VectorIndex.load(target)
    assert loaded is not None and loaded.tag == idx.tag and loaded.ids().tolist() == [10, 11, 12, 13]
    scores, ids = loaded.search(vecs[2], 2, allowed=np.array([10, 12]))
    assert ids.tolist() == [[12, 10]] and scores[0].tolist() == [1.0, 0.0]


def test_adding_an_existing_id_replaces_its_vector(tmp_path: Path) -> None:
    idx = VectorIndex(IndexTag("cat", "m@1", "image", 0, 2))
    idx.add(np.array([5]), np.array([[1.0, 0.0]], dtype=np.float32))
    idx.add(np.array([5]), np.array([[0.0, 1.0]], dtype=np.float32))
    assert idx.count == 1
    scores, ids = idx.search(np.array([0.0, 1.0], dtype=np.float32), 1)
    assert ids.tolist() == [[5]] and scores.tolist() == [[1.0]]
