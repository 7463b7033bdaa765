"""Indexing rules: incremental runs, renames, deletions, skips, roots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, make_photo
from indexer.errors import LibraryBusy, PathNotFound
from retrieval.library import Library
from indexer.lock import WriteLock


def counts(report: object) -> dict[str, int]:
    d = report.to_dict()  # type: ignore[attr-defined]
    return {k: d[k] for k in ("added", "updated", "removed", "renamed", "skipped", "encoded")}


def index_ids(lib: Library) -> list[int]:
    model = lib.active_model()
    assert model is not None
    return lib.indexes.get(model, "image").ids().tolist()


def stored_ids(lib: Library) -> list[int]:
    model = lib.active_model()
    assert model is not None
    return lib.catalog.vectors(model.id, "image")[0].tolist()


def path_of(lib: Library, item_id: int) -> str:
    row = lib.item(item_id)
    assert row is not None and row.path is not None
    return row.path


def ids_by_name(lib: Library) -> dict[str, int]:
    return {Path(path_of(lib, i)).name: i for i in stored_ids(lib)}


def test_first_run_indexes_every_image_and_skips_the_bad_file(library: Library, photos: Path) -> None:
    report = library.index([photos], model=TINY)
    assert counts(report) == {"added": 12, "updated": 0, "removed": 0, "renamed": 0, "skipped": 1, "encoded": 12}
    assert sorted(ids_by_name(library)) == sorted([f"beach{i}.jpg" for i in range(8)] + [f"cat{i}.png" for i in range(8, 12)])
    assert index_ids(library) == stored_ids(library)
    status = library.status(errors=True)
    assert (status.images, status.skipped) == (12, 1)
    assert status.errors == [{"path": str(photos / "home" / "broken.jpg"), "reason": "not a supported image format"}]


def test_second_run_over_an_unchanged_folder_encodes_nothing(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    report = library.index()
    assert counts(report) == {"added": 0, "updated": 0, "removed": 0, "renamed": 0, "skipped": 0, "encoded": 0}


def test_modified_file_is_reencoded_and_its_vector_changes(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    target = photos / "trip" / "beach3.jpg"
    item = ids_by_name(library)["beach3.jpg"]
    model = library.active_model()
    assert model is not None
    before = library.catalog.vectors(model.id, "image", [item])[1][0]
    make_photo(target, seed=99)
    os.utime(target, ns=(1, 2_000_000_000_000_000_000))
    report = library.index()
    assert counts(report) == {"added": 0, "updated": 1, "removed": 0, "renamed": 0, "skipped": 0, "encoded": 1}
    after = library.catalog.vectors(model.id, "image", [item])[1][0]
    assert float(before @ after) < 0.9999
    assert library.search(str(target), top=1)[0].id == item


def test_touched_file_with_the_same_bytes_is_not_reencoded(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    os.utime(photos / "trip" / "beach1.jpg", ns=(1, 1_500_000_000_000_000_000))
    assert counts(library.index())["encoded"] == 0


def test_deleted_file_disappears_from_results(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    gone = ids_by_name(library)["beach5.jpg"]
    (photos / "trip" / "beach5.jpg").unlink()
    report = library.index()
    assert counts(report)["removed"] == 1
    assert gone not in index_ids(library)
    assert library.item(gone) is None
    results = library.search("beach", top=50)
    assert gone not in [r.id for r in results] and len(results) == 11


def test_moved_file_keeps_its_item_and_vector_without_reencoding(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    item = ids_by_name(library)["beach2.jpg"]
    (photos / "archive").mkdir()
    shutil.move(photos / "trip" / "beach2.jpg", photos / "archive" / "renamed.jpg")
    report = library.index()
    assert counts(report) == {"added": 0, "updated": 0, "removed": 0, "renamed": 1, "skipped": 0, "encoded": 0}
    assert path_of(library, item) == str(photos / "archive" / "renamed.jpg")
    assert library.search(str(photos / "archive" / "renamed.jpg"), top=1)[0].id == item


def test_copy_of_an_indexed_file_reuses_its_vector(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    shutil.copy(photos / "trip" / "beach0.jpg", photos / "trip" / "copy.jpg")
    report = library.index()
    assert counts(report) == {"added": 1, "updated": 0, "removed": 0, "renamed": 0, "skipped": 0, "encoded": 0}
    model = library.active_model()
    assert model is not None
    names = ids_by_name(library)
    vecs = library.catalog.vectors(model.id, "image", [names["beach0.jpg"], names["copy.jpg"]])[1]
    np.testing.assert_array_equal(vecs[0], vecs[1])


def test_skipped_file_is_retried_only_when_it_changes(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    assert counts(library.index())["skipped"] == 0  # unchanged: not retried
    make_photo(photos / "home" / "broken.jpg", seed=50)
    report = library.index()
    assert counts(report) == {"added": 0, "updated": 1, "removed": 0, "renamed": 0, "skipped": 0, "encoded": 1}
    assert library.status().skipped == 0


def test_missing_root_is_reported_and_its_items_kept(library: Library, photos: Path, tmp_path: Path) -> None:
    other = tmp_path / "usb"
    make_photo(other / "x.jpg", seed=77)
    library.index([photos, other], model=TINY)
    shutil.move(other, tmp_path / "unplugged")
    report = library.index()
    assert report.missing_roots == [str(other)]
    assert counts(report)["removed"] == 0
    assert library.status().images == 13


def test_deletions_are_only_detected_inside_the_roots_being_scanned(library: Library, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_photo(a / "1.jpg", seed=1)
    make_photo(b / "2.jpg", seed=2)
    library.index([a, b], model=TINY)
    (b / "2.jpg").unlink()
    assert counts(library.index([a]))["removed"] == 0
    assert counts(library.index([b]))["removed"] == 1


def test_forget_removes_a_root_and_its_items(library: Library, photos: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_photo(other / "y.jpg", seed=70)
    library.index([photos, other], model=TINY)
    assert library.forget(other) == 1
    assert [r["path"] for r in library.status().roots] == [str(photos)]
    assert library.status().images == 12
    assert index_ids(library) == stored_ids(library)
    with pytest.raises(PathNotFound):
        library.forget(tmp_path / "never-indexed")


def test_walk_skips_hidden_folders_excluded_globs_and_ends_symlink_loops(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "walk"
    make_photo(root / "keep.jpg", seed=1)
    make_photo(root / ".hidden" / "secret.jpg", seed=2)
    make_photo(root / "raw" / "skipme.jpg", seed=3)
    make_photo(root / "deep" / "inner.jpg", seed=4)
    (root / "deep" / "loop").symlink_to(root, target_is_directory=True)
    (root / "notes.txt").write_text("not an image")
    library.index([root], model=TINY, exclude=["*/raw/*"])
    assert sorted(ids_by_name(library)) == ["inner.jpg", "keep.jpg"]


def test_index_of_a_missing_path_is_refused_before_anything_changes(library: Library, tmp_path: Path) -> None:
    with pytest.raises(PathNotFound, match="nope does not exist"):
        library.index([tmp_path / "nope"], model=TINY)
    assert library.status().roots == []


def test_second_writer_is_refused_with_the_holders_pid(library: Library, photos: Path) -> None:
    with WriteLock(library.home / "lock"):
        with pytest.raises(LibraryBusy, match=f"pid {os.getpid()}"):
            library.index([photos], model=TINY)


def test_non_utf8_file_names_round_trip(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "names"
    root.mkdir()
    raw = os.path.join(os.fsencode(root), b"caf\xe9.jpg")
    make_photo(Path(os.fsdecode(raw)), seed=5)
    library.index([root], model=TINY)
    (item,) = stored_ids(library)
    assert library.item_file(item) == raw
    assert counts(library.index())["encoded"] == 0
