"""ONNX exports of clipdex-tiny's towers: validated against torch, found again by fingerprint, usable without torch."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from indexer import onnx_export
from indexer.decode import DecodedImage, decode_images
from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, Derived, DerivedRejected, Refused, entry_folder, lookup
from indexer.encode import encode_images, encode_texts
from indexer.models import Encoder, ModelSpec, load_encoder
from indexer.onnx_encode import OnnxImageEncoder, OnnxTextEncoder
from indexer.tokenizer import recipe_of
from conftest import make_photo
from test_models import TINY_FINGERPRINT
from test_tokenizer import CAPTIONS


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return load_encoder(ModelSpec.parse("clipdex-tiny"), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def exported(tiny: Encoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Derived, Derived]:
    home = tmp_path_factory.mktemp("lib")
    return home, onnx_export.text_encoder(tiny, home), onnx_export.image_encoder(tiny, home)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_text_export_gives_torch_vectors(tiny: Encoder, exported: tuple[Path, Derived, Derived]) -> None:
    home, text, _ = exported
    assert text.folder == entry_folder(home, TINY_FINGERPRINT)
    assert lookup(home, TINY_FINGERPRINT, TEXT_ENCODER, full_check=True) == text
    assert [f.name for f in text.tag.files] == ["text-encoder.onnx", "text-encoder.onnx.data"]
    assert text.companion(".onnx.data").stat().st_size > 12_000_000 > text.path.stat().st_size  # the weights
    assert text.tag.info == {
        "tokenizer": recipe_of(tiny.tokenizer).recipe.to_json(), "dim": 128, "input": "token_ids", "output": "vectors",
        "trims_padding": True,
    }
    # each caption cut to its own length, then all of them cut to the longest
    assert (text.tag.versions["opset"], text.tag.validation["samples"]) == ("17", 2 * len(onnx_export.VALIDATION_CAPTIONS))
    assert text.tag.validation["min_cosine"] >= onnx_export.MIN_COSINE
    onnx = OnnxTextEncoder.open(text).encode(CAPTIONS)
    torch_vectors = encode_texts(tiny, CAPTIONS)
    assert onnx.shape == torch_vectors.shape == (len(CAPTIONS), 128) and onnx.dtype == np.float32
    assert cosines(onnx, torch_vectors).min() >= onnx_export.MIN_COSINE
    assert np.abs(onnx - torch_vectors).max() < 1e-4
    single = OnnxTextEncoder.open(text).encode(["a photo of a cat"])  # the batch is dynamic
    assert np.abs(single - encode_texts(tiny, ["a photo of a cat"])).max() < 1e-4


def test_image_export_gives_encode_images_vectors(tiny: Encoder, exported: tuple[Path, Derived, Derived], tmp_path: Path) -> None:
    home, _, image = exported
    assert lookup(home, TINY_FINGERPRINT, IMAGE_ENCODER, full_check=True) == image
    assert image.tag.info == {
        "dim": 128, "height": 48, "width": 48, "mean": list(tiny.mean), "std": list(tiny.std), "input": "pixels", "output": "vectors",
        "resize_mode": tiny.input_spec.resize_mode, "interpolation": tiny.input_spec.interpolation,
        "fill_color": tiny.input_spec.fill_color,
    }
    assert OnnxImageEncoder.open(image).input_spec == tiny.input_spec  # a photo query decodes as the torch path does
    paths = [str(make_photo(tmp_path / f"p{i}.jpg", seed=i)) for i in range(5)]
    decoded = decode_images(paths, tiny.input_spec)
    pixels = np.stack([d.pixels for d in decoded if isinstance(d, DecodedImage)])  # (5, 48, 48, 3) uint8
    onnx = OnnxImageEncoder.open(image).encode(pixels)
    torch_vectors = encode_images(tiny, pixels)
    assert onnx.shape == (5, 128)
    assert cosines(onnx, torch_vectors).min() >= onnx_export.MIN_COSINE
    assert np.abs(onnx - torch_vectors).max() < 1e-4


def test_the_search_side_needs_no_torch(tiny: Encoder, exported: tuple[Path, Derived, Derived]) -> None:
    home, _, _ = exported
    code = (
        "import json, sys\nfrom pathlib import Path\n"
        "from indexer.derived import TEXT_ENCODER, lookup\nfrom indexer.onnx_encode import OnnxTextEncoder\n"
        f"found = lookup(Path({str(home)!r}), {TINY_FINGERPRINT!r}, TEXT_ENCODER)\n"
        "vectors = OnnxTextEncoder.open(found).encode(['a red car', '東京の夜景 🐱'])\n"
        "print(json.dumps([vectors.tolist(), sorted(m for m in ('torch', 'open_clip') if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    vectors, imported = json.loads(out.stdout)
    assert imported == []
    assert np.abs(np.array(vectors) - encode_texts(tiny, ["a red car", "東京の夜景 🐱"])).max() < 1e-4


def test_an_unsupported_tokenizer_is_refused_and_recorded(tiny: Encoder, tmp_path: Path) -> None:
    random_drop = open_clip.tokenizer.SimpleTokenizer(context_length=24, reduction_mask="simple")
    with pytest.raises(DerivedRejected, match="reduction mask"):
        onnx_export.text_encoder(dataclasses.replace(tiny, tokenizer=random_drop), tmp_path)
    found = lookup(tmp_path, TINY_FINGERPRINT, TEXT_ENCODER)
    assert isinstance(found, Refused) and "reduction mask" in found.reason


def test_a_failed_validation_is_refused(tiny: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "MIN_COSINE", 1.5)  # no vector passes
    with pytest.raises(DerivedRejected, match=r"cosine 1\.0000\d* < 1\.5 with torch's"):
        onnx_export.image_encoder(tiny, tmp_path)
    assert sorted(p.name for p in entry_folder(tmp_path, TINY_FINGERPRINT).iterdir()) == [
        ".image-encoder.lock", "image-encoder.tag.json"
    ]


def test_an_encoder_without_fp32_weights_is_not_exported(tiny: Encoder, tmp_path: Path) -> None:
    # (int8 keeps the fp32 weights since issue 12: only its images go through a quantised copy)
    half = dataclasses.replace(tiny, model=copy.deepcopy(tiny.model).half(), precision="fp16")
    with pytest.raises(ValueError, match="fp32"):
        onnx_export.text_encoder(half, tmp_path)


def test_a_text_tower_that_cannot_trim_takes_the_full_context(tiny: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "trims_padding", lambda encoder: False)  # as for a tower that is not open_clip's own
    text = onnx_export.text_encoder(tiny, tmp_path)
    assert text.tag.info["trims_padding"] is False
    assert text.tag.validation["samples"] == len(onnx_export.VALIDATION_CAPTIONS)
    onnx = OnnxTextEncoder.open(text)
    assert not onnx.trims_padding
    assert np.abs(onnx.encode(CAPTIONS) - encode_texts(tiny, CAPTIONS)).max() < 1e-4
