"""Model identity without re-hashing: the fingerprint cache, and models built without random initialisation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file

from indexer import fingerprints
from indexer.model_store import BUILTIN_DIR, register_builtin_models
from indexer.models import ModelSpec, _with_weights, load_encoder
from test_models import TINY_FINGERPRINT

TINY_WEIGHTS = BUILTIN_DIR / "clipdex-tiny.safetensors"


def copy_of_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "weights" / "tiny.safetensors"
    path.parent.mkdir()
    shutil.copyfile(TINY_WEIGHTS, path)
    return path


def cache(home: Path) -> dict[str, dict[str, object]]:
    return json.loads((home / fingerprints.CACHE_FILE).read_text())


def plant(home: Path, fingerprint: str) -> None:
    """Make every cached entry claim `fingerprint`: what a load returns if it trusts the cache."""
    entries = cache(home)
    for entry in entries.values():
        entry["fingerprint"] = fingerprint
    (home / fingerprints.CACHE_FILE).write_text(json.dumps(entries))


def test_a_fingerprint_is_remembered_and_trusted_while_the_file_is_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "lib"
    spec = ModelSpec.parse("clipdex-tiny", copy_of_tiny(tmp_path))
    assert load_encoder(spec, "cpu", home=home).fingerprint == TINY_FINGERPRINT
    stamp = fingerprints.FileStamp.of(Path(str(spec.checkpoint)))
    assert stamp is not None
    assert list(cache(home).values()) == [
        {"stamp": stamp.__dict__, "loader": fingerprints._loader(), "fingerprint": TINY_FINGERPRINT, "spec": spec.label}
    ]
    assert fingerprints.for_spec(home, spec.label) == TINY_FINGERPRINT
    plant(home, "clipdex-tiny@remembered")
    assert load_encoder(spec, "cpu", home=home).fingerprint == "clipdex-tiny@remembered"


def test_changed_weights_of_the_same_size_are_hashed_again(tmp_path: Path) -> None:
    home = tmp_path / "lib"
    path = copy_of_tiny(tmp_path)
    spec = ModelSpec.parse("clipdex-tiny", path)
    load_encoder(spec, "cpu", home=home)
    plant(home, "clipdex-tiny@stale")
    size = path.stat().st_size
    with open(path, "r+b") as f:  # one byte of the last tensor's data, in place
        f.seek(size - 2)
        byte = f.read(1)
        f.seek(size - 2)
        f.write(bytes([byte[0] ^ 0x01]))
    assert path.stat().st_size == size
    assert fingerprints.for_spec(home, spec.label) is None
    changed = load_encoder(spec, "cpu", home=home).fingerprint
    assert changed == load_encoder(spec, "cpu").fingerprint != TINY_FINGERPRINT  # without a library: no cache
    assert fingerprints.for_spec(home, spec.label) == changed


def test_a_touched_but_equal_file_is_hashed_again_to_the_same_fingerprint(tmp_path: Path) -> None:
    home = tmp_path / "lib"
    path = copy_of_tiny(tmp_path)
    spec = ModelSpec.parse("clipdex-tiny", path)
    load_encoder(spec, "cpu", home=home)
    plant(home, "clipdex-tiny@stale")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_encoder(spec, "cpu", home=home).fingerprint == TINY_FINGERPRINT
    (entry,) = cache(home).values()
    assert entry["stamp"]["mtime_ns"] == st.st_mtime_ns + 1_000_000_000  # type: ignore[index]


def test_built_in_models_are_cached_by_their_file_and_nothing_is_written_without_a_library(tmp_path: Path) -> None:
    assert load_encoder(ModelSpec.parse("clipdex-tiny"), "cpu").fingerprint == TINY_FINGERPRINT
    assert not any(tmp_path.rglob("fingerprints.json"))
    home = tmp_path / "lib"
    assert load_encoder(ModelSpec.parse("clipdex-tiny"), "cpu", home=home).fingerprint == TINY_FINGERPRINT
    (entry,) = cache(home).values()
    assert (entry["spec"], entry["stamp"]["path"]) == ("clipdex-tiny", str(TINY_WEIGHTS.resolve()))  # type: ignore[index]


def test_a_model_built_without_random_init_equals_one_built_with_it() -> None:
    register_builtin_models()
    fast = _with_weights("clipdex-tiny", str(TINY_WEIGHTS))
    slow = open_clip.create_model("clipdex-tiny", pretrained=None, load_weights=False)
    slow.load_state_dict(load_file(str(TINY_WEIGHTS)))
    fast_state, slow_state = fast.state_dict(), slow.state_dict()
    assert list(fast_state) == list(slow_state)
    assert all(torch.equal(fast_state[k], slow_state[k]) for k in slow_state)
    assert torch.equal(fast.attn_mask, slow.attn_mask)  # built in __init__, never loaded
    assert [p.requires_grad for p in fast.parameters()] == [p.requires_grad for p in slow.parameters()]
    tokens = open_clip.get_tokenizer("clipdex-tiny")(["a red circle"])
    with torch.no_grad():
        assert torch.equal(fast.encode_text(tokens), slow.encode_text(tokens))  # type: ignore[operator]
