"""Normalisation: every EXIF orientation, colour mode and format shows the upright sRGB picture.

Two checks per file, against an upright 8-bit sRGB PNG of the same picture:

- the issue's check: the clipdex-tiny embeddings have cosine >= 0.99. clipdex-tiny
  has seeded random weights, and such a network barely tells pictures apart: two
  unrelated photos score 0.955-0.99, the reference rotated or flipped scores
  0.9999, higher than its own JPEG (0.9996). So this check alone proves little;
- the check that catches mistakes: the model's input pixels match the reference's
  within the codec's loss (mean |difference| <= 0.5 levels for lossless files,
  1 through the test CMYK profile's 9-point grid, <= 6 for JPEG, HEIC and AVIF), where a wrong orientation differs by 47-93 levels
  and a CMYK or 16-bit conversion error by tens of levels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from indexer.decode import DecodedImage, decode_bytes, decode_image
from malformed_corpus import _TO_STORED, cmyk_for_profile, upright, variants
from indexer.encode import encode_images
from indexer.models import Encoder, load_encoder

LOSSY = {"jpg", "heic", "avif"}
GREY = {"gray16.png", "gray16.tif"}  # 16-bit greyscale: compared with the greyscale picture
NAMES = [
    *(f"orient{o}.{e}" for o in range(1, 9) for e in ("png", "jpg")),
    "cmyk.jpg", "cmyk.tif", "cmyk-icc.jpg", "cmyk-icc.tif", "srgb-icc.jpg", "gray16.png", "gray16.tif", "rgb16.png", "palette-alpha.png",
    "rgba-opaque.png", "animated.gif", "animated.webp", "photo.heic", "rotated.heic", "photo.avif",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder(TINY, "cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return variants(tmp_path_factory.mktemp("variants"))


def model_input(encoder: Encoder, img: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    res = decode_bytes(buf.getvalue(), encoder.input_spec)
    assert isinstance(res, DecodedImage)
    return res.pixels  # (H, W, 3) uint8


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_the_corpus_covers_every_variant(files: dict[str, Path]) -> None:
    assert set(files) - {"reference.png"} == set(NAMES) - ({"photo.avif"} - set(files))


@pytest.mark.parametrize("name", NAMES)
def test_variant_matches_the_upright_srgb_reference(encoder: Encoder, files: dict[str, Path], name: str) -> None:
    if name not in files:
        pytest.skip(f"{name}: this Pillow build cannot write it (AVIF support is optional)")
    picture = upright().convert("L").convert("RGB") if name in GREY else upright()
    reference = model_input(encoder, picture)
    res = decode_image(str(files[name]), encoder.input_spec)
    assert isinstance(res, DecodedImage), res
    assert (res.info.width, res.info.height) == picture.size  # as displayed, after orientation

    tolerance = 6.0 if name.rsplit(".", 1)[1] in LOSSY else 1.0 if name.startswith("cmyk-icc") else 0.5
    assert mean_diff(res.pixels, reference) <= tolerance
    wrong = min(mean_diff(model_input(encoder, picture.transpose(t)), reference) for t in _TO_STORED.values())
    assert wrong > 5 * tolerance  # so the tolerance would catch an orientation mistake

    vectors = encode_images(encoder, np.stack([res.pixels, reference]))  # (2, D)
    assert float(vectors[0] @ vectors[1]) >= 0.99


def test_animation_gives_its_first_frame(encoder: Encoder, files: dict[str, Path]) -> None:
    for name in ("animated.gif", "animated.webp"):
        res = decode_image(str(files[name]), encoder.input_spec)
        assert isinstance(res, DecodedImage)
        assert mean_diff(res.pixels, model_input(encoder, upright())) == 0.0
        red = model_input(encoder, Image.new("RGB", upright().size, (255, 0, 0)))
        assert mean_diff(res.pixels, red) > 50


def test_an_embedded_cmyk_profile_is_applied(encoder: Encoder, files: dict[str, Path]) -> None:
    """The test profile renders inks crosswise: ignoring it would rotate the colours."""
    reference = model_input(encoder, upright())
    with_profile = decode_image(str(files["cmyk-icc.tif"]), encoder.input_spec)
    plain = io.BytesIO()
    cmyk_for_profile(upright()).save(plain, "TIFF")  # the same pixels without the profile
    without = decode_bytes(plain.getvalue(), encoder.input_spec)
    assert isinstance(with_profile, DecodedImage) and isinstance(without, DecodedImage)
    assert mean_diff(with_profile.pixels, reference) <= 1.0
    assert mean_diff(without.pixels, reference) > 50
