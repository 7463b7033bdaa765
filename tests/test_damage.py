"""Damaged and full disks: a full disk leaves the last good state; a damaged catalog is reported, never reset."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, make_photo
from indexer import failpoints, vector_index
from indexer.errors import CatalogError, DiskFull
from retrieval.library import Library


def search_ids(lib: Library) -> list[int]:
    return sorted(r.id for r in lib.search("anything", top=1000))


def stored_ids(lib: Library) -> list[int]:
    model = lib.active_model()
    assert model is not None
    return lib.catalog.vectors(model.id, "image")[0].tolist()


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * chunk) == chunk:
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def mount_small_disk(mount: Path) -> None:
    """Mount an 8 MB tmpfs on `mount`; without one, skip, or fail under CI=true (CI runs as root)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode == 0:
        return
    why = f"cannot mount a tmpfs on {mount} ({done.stderr.decode().strip()})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the full-disk tests must run in CI, as root: {why}")
    pytest.skip(f"{why}; the injected-ENOSPC tests cover index saves and catalog commits")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB tmpfs: writes fail with ENOSPC exactly as on a full disk (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mount_small_disk(mount)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_tmpfs_skips_outside_ci_and_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = tmp_path / "no-such-folder"  # mount(8) refuses a mount point that does not exist, even for root
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"the full-disk tests must run in CI, as root: cannot mount a tmpfs on {nowhere}"):
        mount_small_disk(nowhere)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=f"cannot mount a tmpfs on {nowhere}"):
        mount_small_disk(nowhere)


def test_full_disk_during_index_save_keeps_the_previous_index(tmp_path: Path, photos: Path, small_disk: Path) -> None:
    home = tmp_path / "lib"
    (home / "indexes").parent.mkdir(parents=True)
    (home / "indexes").symlink_to(small_disk, target_is_directory=True)  # the index files live on the small disk
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
        before = search_ids(lib)
    index_file = next(small_disk.glob("*-image.faiss"))
    saved = index_file.read_bytes()
    filler = fill(small_disk)
    for i in range(20):
        make_photo(photos / "new" / f"n{i}.jpg", seed=500 + i)

    with Library.open(home) as lib, pytest.raises(DiskFull) as err:
        lib.index()
    shown = home / "indexes" / index_file.name
    assert str(err.value).startswith(f"cannot save the search index {shown}: no space left on the device;")
    assert index_file.read_bytes() == saved  # the previous file, whole
    assert temp_files(small_disk) == []
    with Library.open(home) as lib:  # still full: searching works from the old file plus the change log
        assert len(stored_ids(lib)) == 32
        assert search_ids(lib) == stored_ids(lib) != before
    filler.unlink()
    with Library.open(home) as lib:
        assert search_ids(lib) == stored_ids(lib)
        assert lib.status().index["in_sync"] is True


def test_full_disk_during_catalog_commit_keeps_every_committed_batch(tmp_path: Path, photos: Path, small_disk: Path) -> None:
    home = small_disk / "lib"
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
        before = search_ids(lib)
    for i in range(300):  # far more rows than the WAL has room for
        make_photo(photos / "many" / f"m{i:03d}.png", seed=1000 + i, size=(24, 18))

    with Library.open(home) as lib:  # open, then the disk fills up while it indexes
        lib.search("warm up", top=1)
        filler = fill(small_disk)
        with pytest.raises(DiskFull) as err:
            lib.index(batch_size=64)
    assert str(err.value).startswith(f"cannot write the catalog sqlite:///{home / 'catalog.db'}: the disk is full")
    filler.unlink()
    with Library.open(home) as lib:
        assert lib.catalog.check_integrity(full=True) == []
        assert set(before) <= set(stored_ids(lib))
        assert search_ids(lib) == stored_ids(lib)
        assert temp_files(home) == []
        lib.index()  # resumes
        assert len(stored_ids(lib)) == 12 + 300


def test_disk_already_full_is_one_clear_line(tmp_path: Path, photos: Path, small_disk: Path) -> None:
    home = small_disk / "lib"
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
    make_photo(photos / "one-more.jpg", seed=4242)
    filler = fill(small_disk)
    result = CliRunner().invoke(app, ["index", "--library", str(home)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot write the catalog sqlite:///{home / 'catalog.db'}: the disk is full")
    assert len(result.stderr.strip().splitlines()) == 1
    filler.unlink()
    with Library.open(home) as lib:
        assert lib.catalog.check_integrity(full=True) == []
        assert len(stored_ids(lib)) == 12
        lib.index()
        assert len(stored_ids(lib)) == 13


def test_injected_enospc_at_fsync_leaves_no_temp_file(library: Library, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path without root: the kernel reports a full disk at fsync."""
    library.index([photos], model=TINY)
    model = library.active_model()
    assert model is not None
    path = library.indexes.path_for(model, "image")
    saved = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vector_index.os, "fsync", full)
    make_photo(photos / "new.jpg", seed=77)
    with pytest.raises(DiskFull, match="no space left on the device"):
        library.index()
    monkeypatch.undo()
    assert path.read_bytes() == saved
    assert temp_files(path.parent) == []
    with Library.open(library.home) as again:
        assert search_ids(again) == stored_ids(again) and len(stored_ids(again)) == 13


@contextmanager
def disk_full_from_commit(count: int) -> Iterator[None]:
    """From the `count`-th catalog commit in the block on, every commit meets a full disk."""
    failpoints.arm(failpoints.CATALOG_BEFORE_COMMIT, count, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    try:
        yield
    finally:
        failpoints.disarm()


def test_injected_enospc_in_a_catalog_commit_keeps_every_committed_batch(tmp_path: Path, photos: Path) -> None:
    """Without root: the disk fills up inside a catalog transaction, every row written, none committed."""
    home = tmp_path / "lib"
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
        before = stored_ids(lib)
        assert search_ids(lib) == before and len(before) == 12
    for i in range(20):
        make_photo(photos / "new" / f"n{i:02d}.jpg", seed=700 + i)

    with Library.open(home) as lib:
        lib.search("warm up", top=1)
        with disk_full_from_commit(2), pytest.raises(DiskFull) as err:
            lib.index(batch_size=8)  # batches of 8, 8, 4: the first commits, the second meets the full disk
    assert str(err.value) == (
        f"cannot write the catalog sqlite:///{home / 'catalog.db'}: the disk is full (No space left on device). "
        "Every batch committed before is kept; free some space and run the command again to resume"
    )
    with Library.open(home) as lib:
        assert lib.catalog.check_integrity(full=True) == []
        kept = stored_ids(lib)
        assert set(before) < set(kept) and len(kept) == 12 + 8  # nothing lost, the rolled-back batch absent
        assert search_ids(lib) == kept  # FAISS caught up with exactly the committed vectors
        report = lib.index()  # the disk has room again: the run resumes
        assert (report.added, report.encoded) == (12, 12)
        assert len(stored_ids(lib)) == 12 + 20
        assert search_ids(lib) == stored_ids(lib)
        assert lib.status().index["in_sync"] is True


def test_temp_file_of_a_killed_save_is_removed_on_open(library: Library, photos: Path) -> None:
    library.index([photos], model=TINY)
    folder = library.home / "indexes"
    child = subprocess.Popen(["true"])
    child.wait()
    (folder / f".x-image.faiss.{child.pid}.tmp").write_bytes(b"half")
    (folder / f".x-image.faiss.{os.getpid()}.tmp").write_bytes(b"being written")
    Library.open(library.home).close()
    assert temp_files(folder) == [f".x-image.faiss.{os.getpid()}.tmp"]  # a live writer's file is kept


@pytest.fixture
def indexed_home(tmp_path: Path, photos: Path) -> Path:
    """A library with a SQLite catalog file (the file is what these tests damage)."""
    home = tmp_path / "lib"
    with Library.open(home) as lib:
        lib.index([photos], model=TINY)
    assert not (home / "catalog.db-wal").exists()  # the last connection checkpointed the WAL
    return home


def damaged(home: Path, change: bytes) -> bytes:
    (home / "catalog.db").write_bytes(change)
    return change


def test_truncated_catalog_is_reported_and_left_as_it_is(indexed_home: Path) -> None:
    data = (indexed_home / "catalog.db").read_bytes()
    page = int.from_bytes(data[16:18], "big")
    half = damaged(indexed_home, data[: (len(data) // page // 2) * page])
    with pytest.raises(CatalogError, match="is damaged .* clipdex does not"):
        with Library.open(indexed_home) as lib:
            lib.index()
    assert (indexed_home / "catalog.db").read_bytes() == half


def test_emptied_catalog_is_not_started_over(indexed_home: Path) -> None:
    damaged(indexed_home, b"")
    with pytest.raises(CatalogError, match=r"is empty, but this library was indexed into catalog [0-9a-f]{32}"):
        Library.open(indexed_home)
    assert (indexed_home / "catalog.db").read_bytes() == b""
    result = CliRunner().invoke(app, ["status", "--library", str(indexed_home)])
    assert result.exit_code == 1 and "clipdex does not start it over silently" in result.stderr


def test_bit_flips_in_the_catalog_are_detected(indexed_home: Path) -> None:
    data = bytearray((indexed_home / "catalog.db").read_bytes())
    page = int.from_bytes(data[16:18], "big")
    header = bytearray(data)
    header[0] ^= 0x01  # the file magic
    btree = bytearray(data)
    btree[2 * page] ^= 0x08  # the type byte of page 3's b-tree header
    for flipped, message in ((header, "file is not a database"), (btree, "is damaged")):
        damaged(indexed_home, bytes(flipped))
        with pytest.raises(CatalogError, match=message):
            with Library.open(indexed_home) as lib:
                lib.index()
        assert (indexed_home / "catalog.db").read_bytes() == bytes(flipped)


def test_damaged_catalog_is_one_clear_line_in_the_cli(indexed_home: Path) -> None:
    data = bytearray((indexed_home / "catalog.db").read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for p in range(1, len(data) // page):  # wreck every page but the schema page
        data[p * page : p * page + 8] = b"\xff" * 8
    damaged(indexed_home, bytes(data))
    result = CliRunner().invoke(app, ["status", "--library", str(indexed_home)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: the catalog sqlite:///{indexed_home / 'catalog.db'} is damaged (")
    assert len(result.stderr.strip().splitlines()) == 1


def test_integrity_check_matches_sqlite_itself(indexed_home: Path) -> None:
    with Library.open(indexed_home) as lib:
        assert lib.catalog.check_integrity(full=True) == []
    con = sqlite3.connect(indexed_home / "catalog.db")
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    shutil.rmtree(indexed_home / "indexes")
    with Library.open(indexed_home) as lib:  # a lost index is rebuilt, not an error
        assert search_ids(lib) == stored_ids(lib)
