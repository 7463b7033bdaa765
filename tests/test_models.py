"""Model loading: determinism, checkpoints, the offline hub cache, clear failures."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, env_without_pytest
from indexer.encode import encode_images, encode_texts
from indexer.errors import CheckpointError, ModelNotAvailable, UnknownModel
from indexer.models import DEFAULT_MODEL, ModelSpec, fingerprint_of, load_encoder
from retrieval.demo.world import make_scenes, render

CLIPDEX = str(Path(sys.executable).with_name("clipdex"))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLIPDEX, *args], env=env, capture_output=True, text=True, timeout=300)


def populate_hub_cache(hf_home: Path, repo: str, files: dict[str, bytes]) -> None:
    """Lay out a Hugging Face hub cache entry exactly as huggingface_hub writes one."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_tiny_model_gives_identical_embeddings_in_separate_processes() -> None:
    here = encode_texts(load_encoder(TINY, "cpu"), ["a red circle"])[0]
    code = (
        "from indexer.models import ModelSpec, load_encoder; from indexer.encode import encode_texts; "
        "print(encode_texts(load_encoder(ModelSpec.parse('clipdex-tiny'), 'cpu'), ['a red circle'])[0].tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    there = np.frombuffer(bytes.fromhex(out.stdout.strip()), dtype=np.float32)
    np.testing.assert_array_equal(here, there)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path: Path, suffix: str) -> None:
    base = load_encoder(TINY, "cpu")
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_encoder(ModelSpec.parse("clipdex-tiny", path), "cpu")
    assert loaded.fingerprint == base.fingerprint
    texts = ["a dog", "two blue squares"]
    np.testing.assert_array_equal(encode_texts(loaded, texts), encode_texts(base, texts))


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, ("/tmp/clipdex-pwned-by-pickle", "w"))


def test_malicious_pickle_checkpoint_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = Path("/tmp/clipdex-pwned-by-pickle")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Exploit()}))
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_encoder(ModelSpec.parse("clipdex-tiny", evil), "cpu")
    assert not marker.exists()


def test_checkpoint_for_another_architecture_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="does not fit architecture clipdex-tiny"):
        load_encoder(ModelSpec.parse("clipdex-tiny", path), "cpu")


def test_unknown_names_and_tags_are_refused() -> None:
    # The library's words are neutral and carry the name; the CLI adds `clipdex models` (test_cli).
    with pytest.raises(UnknownModel, match="neither an open_clip architecture nor a model card") as e:
        load_encoder(ModelSpec.parse("ViT-Nope-1"), "cpu")
    assert getattr(e.value, "name") == "ViT-Nope-1"
    with pytest.raises(UnknownModel, match="no pretrained tag 'nope'"):
        load_encoder(ModelSpec.parse("ViT-B-32:nope"), "cpu")
    with pytest.raises(ModelNotAvailable, match="ViT-B-32:TAG"):
        load_encoder(ModelSpec.parse("ViT-B-32"), "cpu")  # never silently random weights


def test_model_names_parse() -> None:
    assert ModelSpec.parse(DEFAULT_MODEL) == ModelSpec("ViT-B-32-256", "datacomp_s34b_b86k")
    assert ModelSpec.parse("hf-hub:org/repo") == ModelSpec("hf-hub:org/repo")


def test_offline_without_weights_prints_one_line_naming_the_fix(photos: Path, tmp_path: Path) -> None:
    env = env_without_pytest() | {"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": "1"}
    result = run_cli(["index", str(photos)], env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot load {DEFAULT_MODEL}: offline and not in the Hugging Face cache")
    assert "--checkpoint FILE" in lines[0] and "--model clipdex-tiny" in lines[0]


def test_hf_hub_model_loads_offline_from_a_populated_cache(photos: Path, tmp_path: Path) -> None:
    base = load_encoder(TINY, "cpu")
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in base.model.state_dict().items()}, str(weights))
    config = {"model_cfg": open_clip.get_model_config("clipdex-tiny"), "preprocess_cfg": {}}
    hf_home = tmp_path / "hf"
    populate_hub_cache(
        hf_home,
        "clipdex-test/tiny",
        {"open_clip_config.json": json.dumps(config).encode(), "open_clip_model.safetensors": weights.read_bytes()},
    )
    env = env_without_pytest() | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    result = run_cli(["index", str(photos), "--model", "hf-hub:clipdex-test/tiny", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["encoded"] == 12
    status = json.loads(run_cli(["status", "--json"], env).stdout)
    assert status["active_model"] == fingerprint_of("hf-hub:clipdex-test/tiny", base.model.state_dict())


def test_default_pretrained_tag_loads_offline_from_a_populated_cache(photos: Path, tmp_path: Path) -> None:
    # The default model's real loading path, with weights this test writes (random, fp16 to halve the size).
    model = open_clip.create_model("ViT-B-32-256", pretrained=None)
    state16 = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    weights = tmp_path / "b32.safetensors"
    save_file(state16, str(weights))
    hf_home = tmp_path / "hf"
    populate_hub_cache(
        hf_home, "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", {"open_clip_model.safetensors": weights.read_bytes()}
    )
    env = env_without_pytest() | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    result = run_cli(["index", str(photos), "--json"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["encoded"] == 12
    expected = fingerprint_of("ViT-B-32-256", {k: v.float() for k, v in state16.items()})
    assert json.loads(run_cli(["status", "--json"], env).stdout)["active_model"] == expected


def test_text_encoding_uses_the_real_token_length_with_the_same_result() -> None:
    enc = load_encoder(TINY, "cpu", "fp32")  # exact in fp32; bf16 and int8 are held to fp32 below
    texts = ["a dog", "kids on the beach at sunset with a red kite", "x"]
    tokens = enc.tokenizer(texts)
    with torch.no_grad():
        padded = torch.nn.functional.normalize(enc.model.encode_text(tokens).float(), dim=-1).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(encode_texts(enc, texts), padded, rtol=0, atol=1e-5)


def test_repeated_query_texts_come_from_the_cache() -> None:
    from retrieval.search import TextCache

    calls: list[list[str]] = []

    def fake_encode(xs: list[str]) -> np.ndarray:
        calls.append(xs)
        return np.array([[float(len(x)), 1.0] for x in xs], dtype=np.float32)

    cache = TextCache(size=2)
    first = cache.encode("m", ["ab", "c"], fake_encode)
    again = cache.encode("m", ["c", "ab", "ab"], fake_encode)
    np.testing.assert_array_equal(again, first[[1, 0, 0]])
    cache.encode("m", ["new"], fake_encode)  # evicts the least recently used ("c")
    cache.encode("m", ["c"], fake_encode)
    assert calls == [["ab", "c"], ["new"], ["c"]]


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_keeps_the_model_identity_and_its_vectors_close(precision: str) -> None:
    full = load_encoder(TINY, "cpu", "fp32")
    fast = load_encoder(TINY, "cpu", precision)
    assert (fast.fingerprint, fast.precision) == (full.fingerprint, precision)
    texts = ["a red circle above a blue square", "three small striped triangles"]
    cos = np.sum(encode_texts(full, texts) * encode_texts(fast, texts), axis=1)
    assert cos.min() > 0.99
    size = full.input_spec.height
    pixels = np.stack([np.asarray(render(s, size)) for s in make_scenes(8, seed=3)])  # (8, S, S, 3)
    cos = np.sum(encode_images(full, pixels) * encode_images(fast, pixels), axis=1)
    assert cos.min() > 0.99
    # bf16 encodes images with a once-cast copy of the image tower; the model keeps fp32 weights.
    assert (fast.bf16_image_tower is not None) == (precision == "bf16")
    assert fast.model.visual.conv1.weight.dtype == torch.float32
    if fast.bf16_image_tower is not None:
        assert fast.bf16_image_tower[1].conv1.weight.dtype == torch.bfloat16


def test_a_bf16_encoder_copied_with_another_model_encodes_with_that_model() -> None:
    base = load_encoder(TINY, "cpu", "bf16")
    pixels = np.stack([np.asarray(render(s, base.input_spec.height)) for s in make_scenes(4, seed=5)])
    before = encode_images(base, pixels)  # makes base's once-cast bf16 tower
    other = copy.deepcopy(base.model)
    with torch.no_grad():
        other.visual.proj.neg_()  # the same tower with every image embedding negated
    # What evaluate(encoder, model=net) does: the copy must not reuse base's cast tower.
    got = encode_images(dataclasses.replace(base, model=other), pixels)
    np.testing.assert_array_equal(got, -before)


# clipdex-tiny's fingerprint before model cards resolved it (commit 3e0bcda): libraries store it.
TINY_FINGERPRINT = "clipdex-tiny@b308732de893a5d5f8bd"


def test_builtin_model_resolves_through_its_card_with_the_same_identity(tmp_path: Path) -> None:
    from retrieval.library import Library

    enc = load_encoder(TINY, "cpu", "fp32")
    assert (enc.fingerprint, enc.spec, enc.arch) == (TINY_FINGERPRINT, ModelSpec("clipdex-tiny"), "clipdex-tiny")
    with Library.open(tmp_path / "lib", device="cpu") as lib:
        lib.add_texts(["a red circle"], model=TINY)
        row = lib.active_model()
    # Recorded by name, never by the package's weights path (which moves with every install).
    assert row is not None and (row.name, row.pretrained, row.checkpoint) == ("clipdex-tiny", None, None)
    assert row.fingerprint == TINY_FINGERPRINT


def test_saved_model_loads_by_name_and_clipdex_models_lists_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import app
    from indexer.model_store import write_model

    home = tmp_path / "lib"
    tiny = load_encoder(TINY, "cpu", "fp32")
    write_model(home / "models" / "mine.safetensors", tiny.model.state_dict(), {"arch": "clipdex-tiny"})
    mine = load_encoder(ModelSpec.parse("mine"), "cpu", "fp32", home=home)
    assert (mine.fingerprint, mine.spec, mine.arch) == (TINY_FINGERPRINT, ModelSpec("mine"), "clipdex-tiny")
    with pytest.raises(UnknownModel):
        load_encoder(ModelSpec.parse("mine"), "cpu")  # not without the library that holds it

    listed = CliRunner().invoke(app, ["models", "--library", str(home), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)["models"]
    assert rows[:2] == [
        {"name": "clipdex-tiny", "tags": [], "source": "built-in", "arch": "clipdex-tiny"},
        {"name": "mine", "tags": [], "source": "saved", "arch": "clipdex-tiny"},
    ]
    assert [r["name"] for r in rows].count("clipdex-tiny") == 1
    assert {"name": "ViT-B-32", "source": "open_clip", "arch": None}.items() <= next(r for r in rows if r["name"] == "ViT-B-32").items()
    text = CliRunner().invoke(app, ["models", "--library", str(home)]).stdout.splitlines()
    assert text[1:3] == [
        "clipdex-tiny  (built in, offline; architecture clipdex-tiny)",
        "mine  (saved in this library; architecture clipdex-tiny)",
    ]
