"""Decoding: open_clip-identical model input, EXIF orientation, colour modes, bad files."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from conftest import exif_with, make_photo
from indexer.decode import DecodedImage, DecodeFailure, InputSpec, _draft_for, _scale_to_l, decode_image

SPEC = InputSpec(64, 64)


def decoded(path: Path, spec: InputSpec = SPEC) -> DecodedImage:
    res = decode_image(str(path), spec)
    assert isinstance(res, DecodedImage), res
    return res


def failure(path: Path, **kw: int) -> str:
    res = decode_image(str(path), SPEC, **kw)
    assert isinstance(res, DecodeFailure), res
    return res.reason


def test_model_input_equals_open_clips_own_preprocessing(tmp_path: Path) -> None:
    path = make_photo(tmp_path / "a.png", seed=4, size=(150, 110))
    preprocess = open_clip.image_transform(64, is_train=False)
    reference = preprocess(Image.open(path).convert("RGB"))  # (3, 64, 64)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    ours = (torch.from_numpy(decoded(path).pixels.copy()).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_upright_picture(tmp_path: Path, orientation: int) -> None:
    upright = np.asarray(Image.open(make_photo(tmp_path / "up.png", seed=8, size=(96, 64))))
    inverse = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
               5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
               8: [Image.Transpose.ROTATE_270]}.get(orientation, [])
    stored = Image.fromarray(upright)
    for op in inverse:
        stored = stored.transpose(op)
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif_with(orientation=orientation).tobytes())
    out = decoded(path, InputSpec(64, 96, resize_mode="squash"))
    assert (out.info.width, out.info.height, out.info.orientation) == (96, 64, orientation)
    np.testing.assert_array_equal(out.pixels, upright)


def test_exif_capture_time_camera_and_offset(tmp_path: Path) -> None:
    exif = exif_with(taken="2022:12:24 18:30:00", camera=("Canon", "Canon EOS R6"))
    exif.get_ifd(0x8769)[0x9011] = "+02:00"
    info = decoded(make_photo(tmp_path / "e.jpg", seed=1, exif=exif)).info
    assert info.taken_at == datetime(2022, 12, 24, 18, 30, tzinfo=timezone(timedelta(hours=2))).timestamp()
    assert info.camera == "Canon EOS R6"
    naive = decoded(make_photo(tmp_path / "n.jpg", seed=1, exif=exif_with(taken="2022:12:24 18:30:00"))).info
    assert naive.taken_at == datetime(2022, 12, 24, 18, 30).timestamp()  # local time


def test_colour_modes_become_rgb_without_clipping(tmp_path: Path) -> None:
    Image.new("I;16", (8, 8), 65535).save(tmp_path / "white16.png")
    Image.new("I;16", (8, 8), 32896).save(tmp_path / "mid16.png")  # 128 * 257
    assert (decoded(tmp_path / "white16.png").pixels == 255).all()
    assert (decoded(tmp_path / "mid16.png").pixels == 128).all()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.tif")
    assert decoded(tmp_path / "red.tif").pixels[0, 0].tolist() == [255, 0, 0]
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "clear.png", transparency=0)
    assert decoded(tmp_path / "clear.png").pixels[0, 0].tolist() == [255, 255, 255]  # onto white
    Image.new("LA", (8, 8), (10, 255)).save(tmp_path / "la.png")
    assert decoded(tmp_path / "la.png").pixels[0, 0].tolist() == [10, 10, 10]


def test_bad_files_are_failures_with_reasons(tmp_path: Path) -> None:
    good = make_photo(tmp_path / "g.jpg", seed=2).read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    assert failure(tmp_path / "trunc.jpg").startswith("corrupt image")
    assert failure(tmp_path / "empty.jpg") == "empty file"
    assert failure(tmp_path / "text.jpg") == "not a supported image format"
    assert failure(tmp_path / "missing.jpg").startswith("unreadable")
    assert failure(tmp_path / "g.jpg", max_pixels=1000) == "too large: 160x120 pixels is over the 1,000 pixel limit"


def test_huge_dimension_header_is_refused_before_decoding(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    assert failure(tmp_path / "bomb.png").startswith("too large")


@pytest.mark.parametrize(
    ("size", "spec", "drafted"),
    [
        ((4000, 3000), InputSpec(256, 256), (500, 375)),  # a phone photo: 1/8 scale still covers 256
        ((4000, 3000), InputSpec(224, 224), (500, 375)),
        ((1200, 900), InputSpec(256, 256), (600, 450)),  # 1/4 would leave 225 < 256: 1/2
        ((300, 200), InputSpec(256, 256), (300, 200)),  # already small: decoded at full size
    ],
)
def test_jpeg_draft_picks_the_smallest_scale_covering_the_model_input(
    tmp_path: Path, size: tuple[int, int], spec: InputSpec, drafted: tuple[int, int]
) -> None:
    path = tmp_path / "p.jpg"
    Image.new("RGB", size, (90, 140, 200)).save(path, quality=90)
    with Image.open(path) as img:
        _draft_for(img, spec)
        assert img.size == drafted
    assert decoded(path, spec).pixels.shape == (spec.height, spec.width, 3)


def scale_to_l_in_float64(img: Image.Image) -> np.ndarray:
    """The original whole-image float64 conversion, the reference the strip-wise one must equal."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F" or arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        arr = arr / 257.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def wide_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    every_16_bit_value = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    return [
        Image.fromarray(every_16_bit_value),  # I;16
        Image.fromarray(every_16_bit_value).convert("I"),  # 32-bit, within 0..65535
        Image.frombytes("I;16B", (256, 256), every_16_bit_value.astype(">u2").tobytes()),
        Image.fromarray(rng.integers(-70_000, 3_000_000, (300, 5000), dtype=np.int32)),  # stretched, several strips
        Image.fromarray(rng.normal(0.3, 2.0, (40, 70)).astype(np.float32)),  # F
        Image.fromarray(np.full((5, 5), 0.25, dtype=np.float32)),  # flat F: max(1, highest) spans the range
    ]


@pytest.mark.parametrize("index", range(6))
def test_16_and_32_bit_modes_convert_exactly_as_in_float64(index: int) -> None:
    img = wide_images()[index]
    got = np.asarray(_scale_to_l(img))
    assert got.dtype == np.uint8 and got.shape == (img.height, img.width)
    assert np.array_equal(got, scale_to_l_in_float64(img))


def test_16_bit_conversion_makes_no_full_size_float64_copy() -> None:
    img = Image.fromarray(np.arange(4000 * 2000, dtype=np.uint32).reshape(2000, 4000).astype(np.uint16))
    float64_copy = img.width * img.height * 8
    tracemalloc.start()
    try:
        _scale_to_l(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < float64_copy // 4, f"peak {peak:,} bytes for {img.width}x{img.height} pixels"
