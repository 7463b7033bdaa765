"""Derived files: built once per fingerprint, checked on every look-up, rebuilt when bad, never half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.derived import (
    TEXT_ENCODER,
    Built,
    Derived,
    DerivedKind,
    DerivedRejected,
    Refused,
    entry_folder,
    get_or_build,
    lookup,
    rebuild,
)
from indexer.errors import DiskFull

FP = "clipdex-tiny@b308732de893a5d5f8bd"
OTHER = "clipdex-tiny@00000000000000000000"
PAYLOAD = b"ONNX" + bytes(range(256)) * 64


class Builder:
    """A build function that counts its calls and writes PAYLOAD (and companions)."""

    def __init__(self, companions: dict[str, bytes] | None = None, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.companions = companions or {}
        self.fail = fail

    def __call__(self, folder: Path) -> Built:
        self.calls += 1
        with open(folder / TEXT_ENCODER.filename, "wb") as f:
            f.write(PAYLOAD[: len(PAYLOAD) // 2])
            if self.fail is not None:
                raise self.fail
            f.write(PAYLOAD[len(PAYLOAD) // 2 :])
        for name, content in self.companions.items():
            (folder / f"{TEXT_ENCODER.name}.{name}").write_bytes(content)
        return Built({"opset": "17"}, {"dim": 128})


def valid(folder: Path) -> dict[str, float]:
    assert (folder / TEXT_ENCODER.filename).read_bytes() == PAYLOAD
    return {"min_cosine": 1.0}


def refuse(folder: Path) -> dict[str, float]:
    raise DerivedRejected(TEXT_ENCODER.name, FP, "cosine 0.9 < 0.9999")


def files(home: Path, fingerprint: str = FP) -> list[str]:
    return sorted(os.listdir(entry_folder(home, fingerprint)))


def test_built_once_then_found(tmp_path: Path) -> None:
    build = Builder()
    made = get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    assert made.path.read_bytes() == PAYLOAD
    assert (made.tag.fingerprint, made.tag.kind, made.tag.kind_version, made.tag.refused) == (FP, "text-encoder", TEXT_ENCODER.version, None)
    assert (made.tag.versions, made.tag.validation, made.tag.info) == ({"opset": "17"}, {"min_cosine": 1.0}, {"dim": 128})
    assert [(f.name, f.size_bytes) for f in made.tag.files] == [("text-encoder.onnx", len(PAYLOAD))]
    assert files(tmp_path) == [".text-encoder.lock", "text-encoder.onnx", "text-encoder.tag.json"]
    assert made.folder.parent == tmp_path / "derived" and made.folder.name.startswith("clipdex-tiny-")
    again = get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    assert (build.calls, again) == (1, made)
    assert lookup(tmp_path, FP, TEXT_ENCODER, full_check=True) == made


def test_never_used_for_another_fingerprint(tmp_path: Path) -> None:
    get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    assert lookup(tmp_path, OTHER, TEXT_ENCODER) is None
    # Even a folder copied under the other fingerprint's name: its tag names the first one.
    shutil.copytree(entry_folder(tmp_path, FP), entry_folder(tmp_path, OTHER))
    assert lookup(tmp_path, OTHER, TEXT_ENCODER) is None
    assert entry_folder(tmp_path, FP) != entry_folder(tmp_path, OTHER)


def test_missing_truncated_or_damaged_files_are_rebuilt(tmp_path: Path) -> None:
    build = Builder()
    made = get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    with open(made.path, "r+b") as f:
        f.truncate(len(PAYLOAD) - 1)
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None
    get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    # Same size, one byte changed, mtime set back: the ctime still tells, and the hash decides.
    st = made.path.stat()
    data = bytearray(PAYLOAD)
    data[100] ^= 0xFF
    made.path.write_bytes(bytes(data))
    os.utime(made.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None
    get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    made.path.unlink()
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None
    assert get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid).path.read_bytes() == PAYLOAD
    assert build.calls == 4


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "other kind version", "other format"])
def test_a_bad_tag_means_no_entry(tmp_path: Path, damage: str) -> None:
    made = get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    tag_path = made.folder / "text-encoder.tag.json"
    raw = json.loads(tag_path.read_text())
    if damage == "missing":
        tag_path.unlink()
    elif damage == "garbage":
        tag_path.write_bytes(b"\x00not json")
    elif damage == "truncated":
        tag_path.write_text(tag_path.read_text()[:50])
    elif damage == "other kind version":
        tag_path.write_text(json.dumps({**raw, "kind_version": 0}))
    else:
        tag_path.write_text(json.dumps({**raw, "format": 99}))
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None


def test_a_new_kind_version_makes_old_files_stale(tmp_path: Path) -> None:
    build = Builder()
    get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    newer = DerivedKind(TEXT_ENCODER.name, TEXT_ENCODER.suffix, TEXT_ENCODER.version + 1)
    assert lookup(tmp_path, FP, newer) is None
    assert get_or_build(tmp_path, FP, newer, build, valid).tag.kind_version == newer.version
    assert (build.calls, lookup(tmp_path, FP, TEXT_ENCODER)) == (2, None)


def test_a_copied_library_is_hashed_once_and_still_valid(tmp_path: Path) -> None:
    made = get_or_build(tmp_path / "a", FP, TEXT_ENCODER, Builder(), valid)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # new inodes and ctimes
    found = lookup(tmp_path / "b", FP, TEXT_ENCODER)
    assert isinstance(found, Derived) and found.path.read_bytes() == PAYLOAD
    st = found.path.stat()
    assert (found.tag.files[0].inode, found.tag.files[0].ctime_ns) == (st.st_ino, st.st_ctime_ns)
    assert found.tag.files[0].inode != made.tag.files[0].inode
    assert lookup(tmp_path / "b", FP, TEXT_ENCODER) == found  # the tag now records the copy's stat


def test_a_refusal_is_recorded_and_not_retried(tmp_path: Path) -> None:
    build = Builder()
    with pytest.raises(DerivedRejected, match="cosine 0.9 < 0.9999") as e:
        get_or_build(tmp_path, FP, TEXT_ENCODER, build, refuse)
    assert (e.value.kind, e.value.fingerprint, e.value.reason) == ("text-encoder", FP, "cosine 0.9 < 0.9999")
    assert lookup(tmp_path, FP, TEXT_ENCODER) == Refused("cosine 0.9 < 0.9999")
    assert files(tmp_path) == [".text-encoder.lock", "text-encoder.tag.json"]
    with pytest.raises(DerivedRejected, match="cosine 0.9"):
        get_or_build(tmp_path, FP, TEXT_ENCODER, build, valid)
    assert build.calls == 1
    assert rebuild(tmp_path, FP, TEXT_ENCODER, build, valid).path.read_bytes() == PAYLOAD  # a forced retry


def test_a_full_disk_leaves_no_half_file(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskFull, match="no space left on the device"):
        get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(fail=full), valid)
    assert files(tmp_path) == [".text-encoder.lock"]
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None
    # A rebuild that fails keeps the previous good entry as it was.
    made = get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    with pytest.raises(DiskFull):
        rebuild(tmp_path, FP, TEXT_ENCODER, Builder(fail=full), valid)
    assert lookup(tmp_path, FP, TEXT_ENCODER, full_check=True) == made


def test_any_other_build_error_passes_through_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exporter crashed"):
        get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(fail=RuntimeError("exporter crashed")), valid)
    assert files(tmp_path) == [".text-encoder.lock"]


def test_companions_are_kept_with_the_entry_and_dropped_with_it(tmp_path: Path) -> None:
    made = get_or_build(tmp_path, FP, TEXT_ENCODER, Builder({"tokenizer.json": b"{}"}), valid)
    assert made.companion(".tokenizer.json").read_bytes() == b"{}"
    assert [f.name for f in made.tag.files] == ["text-encoder.onnx", "text-encoder.tokenizer.json"]
    made.companion(".tokenizer.json").write_bytes(b"{ }")
    assert lookup(tmp_path, FP, TEXT_ENCODER) is None
    rebuild(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    assert files(tmp_path) == [".text-encoder.lock", "text-encoder.onnx", "text-encoder.tag.json"]


def test_a_build_may_only_write_its_own_kind(tmp_path: Path) -> None:
    def stray(folder: Path) -> Built:
        (folder / TEXT_ENCODER.filename).write_bytes(PAYLOAD)
        (folder / "image-encoder.onnx").write_bytes(PAYLOAD)
        return Built()

    with pytest.raises(ValueError, match="image-encoder.onnx"):
        get_or_build(tmp_path, FP, TEXT_ENCODER, stray, valid)
    assert files(tmp_path) == [".text-encoder.lock"]


def test_temp_folders_of_dead_builds_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = entry_folder(tmp_path, FP) / f".text-encoder.{int(dead.stdout)}.tmp"
    stale.mkdir(parents=True)
    (stale / "text-encoder.onnx").write_bytes(b"half")
    get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    assert files(tmp_path) == [".text-encoder.lock", "text-encoder.onnx", "text-encoder.tag.json"]


def test_looking_up_imports_neither_torch_nor_onnx(tmp_path: Path) -> None:
    get_or_build(tmp_path, FP, TEXT_ENCODER, Builder(), valid)
    code = (
        "import sys\nfrom pathlib import Path\nfrom indexer.derived import TEXT_ENCODER, lookup\n"
        f"found = lookup(Path({str(tmp_path)!r}), {FP!r}, TEXT_ENCODER)\n"
        "print(found.path.name, sorted(m for m in ('torch', 'onnx', 'open_clip', 'faiss') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout == "text-encoder.onnx []\n"


def test_opening_a_library_sweeps_what_a_killed_export_left(tmp_path: Path) -> None:
    from retrieval.library import Library

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: its temp work is stale
    entry = entry_folder(tmp_path / "lib", "clipdex-tiny@0123")
    (entry / f".text-encoder.{pid}.tmp").mkdir(parents=True)
    (entry / f".text-encoder.{pid}.tmp" / "model.onnx").write_bytes(b"half")
    (entry.parent / f".fingerprints.json.{pid}.tmp").write_bytes(b"{")
    live = entry / f".image-encoder.{os.getpid()}.tmp"  # a running writer's work is kept
    live.mkdir()
    with Library.open(tmp_path / "lib"):
        pass
    assert sorted(p.name for p in (tmp_path / "lib" / "derived").rglob("*.tmp")) == [live.name]
