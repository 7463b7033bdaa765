"""The FAISS index is derived data: stale, damaged or foreign files are caught up or rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, make_photo
from indexer import vector_index
from indexer.vector_index import IndexTag, VectorIndex
from retrieval.library import Library
from retrieval.query import SearchFilter
from retrieval.search import ImageResult


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


def test_large_collections_switch_to_ivf_and_still_filter_to_k(
    library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_index, "FLAT_MAX_COMPONENTS", 128 * 1000)  # IVF from 1,000 vectors
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 128)).astype(np.float32)
    vecs = centres[rng.integers(0, 20, 4000)] + 0.3 * rng.standard_normal((4000, 128)).astype(np.float32)
    paths = [f"/bulk/{'even' if n % 2 == 0 else 'odd'}/{n}.jpg" for n in range(4000)]
    library.import_embeddings(paths, vecs, model=TINY)
    st = library.status()
    assert st.index["type"] == "ivf-sq8" and st.index["vectors"] == 4000 and st.index["in_sync"] is True
    assert st.index["memory_bytes"] < 4000 * 128 * 4  # 8-bit codes, not float32

    model = library.active_model()
    assert model is not None
    ids, stored = library.catalog.vectors(model.id, "image")
    query = stored[7]
    exact = ids[np.argsort(-(stored @ query), kind="stable")][:10]
    got = [r.id for r in library.search(f"item:{ids[7]}", top=10)]
    assert len(set(got) & set(exact.tolist())) >= 9  # recall@10 of the 8-bit index

    # A filter matching 3 items still returns all 3, even when their lists are not probed.
    rare = ["/bulk/even/0.jpg", "/bulk/odd/1999.jpg", "/bulk/even/3998.jpg"]
    hits = library.search(f"item:{ids[7]}", top=10, filters=SearchFilter(path_glob="/bulk/*/[0-9].jpg"))
    assert sorted(r.path for r in hits if isinstance(r, ImageResult)) == sorted(
        p for p in paths if p.rsplit("/", 1)[1] in {f"{d}.jpg" for d in range(10)}
    )
    assert rare[0] in [r.path for r in hits if isinstance(r, ImageResult)]


def test_ivf_index_is_retrained_after_growing_fourfold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "FLAT_MAX_COMPONENTS", 8 * 300)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((2000, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = VectorIndex.build(IndexTag("c", "m@1", "image", 0, 8), np.arange(400), vecs[:400])
    assert (idx.type_name, idx.tag.trained_on) == ("ivf-sq8", 400)
    idx.add(np.arange(400, 1600), vecs[400:1600])
    assert not idx.needs_rebuild()
    idx.add(np.arange(1600, 2000), vecs[1600:])
    assert idx.needs_rebuild()
    idx.remove(np.arange(200, 2000))
    assert idx.count == 200 and not idx.needs_rebuild()  # under the threshold, not yet under half of it
    idx.remove(np.arange(100, 200))
    assert idx.count == 100 and idx.needs_rebuild()
    assert VectorIndex.build(idx.tag, idx.ids(), vecs[:100]).type_name == "flat"
