"""Generate a folder of realistic test photos for the benchmarks.

Mostly 12-megapixel JPEGs at quality 90 with fine sensor-like texture (3-5 MB
each, like a phone's), with camera EXIF and some rotated; plus PNG screenshots
and small web images. Deterministic for a seed; reused when already present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

PHONE = (4000, 3000)


def _phone_picture(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    # Smooth scene: a few large colour fields, built small and upscaled (cheap), then texture.
    small = rng.random((6, 8, 3)) * 200 + 30
    scene = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    yy, xx = np.mgrid[0:h:8, 0:w:8]
    ripple = (20 * np.sin(xx / rng.uniform(15, 60)) * np.cos(yy / rng.uniform(15, 60))).astype(np.int16)
    ripple = np.kron(ripple, np.ones((8, 8), dtype=np.int16))[:h, :w, None]
    # Detail at every scale survives downscaling, as foliage, fabric and gravel do.
    detail = rng.normal(0, 32, (h // 10, w // 10, 3)).astype(np.float32)
    detail_img = np.asarray(Image.fromarray(np.clip(detail + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16) - 128
    grain = rng.normal(0, 9, (h, w, 1)).astype(np.int16)  # luminance noise, like a small sensor
    return Image.fromarray(np.clip(scene + ripple + detail_img + grain, 0, 255).astype(np.uint8))


def _exif(rng: np.random.Generator, n: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Google", "Pixel 8"
    exif[0x0112] = [1, 1, 1, 6, 8, 3][n % 6]  # some rotated, as phones store portrait shots
    exif.get_ifd(0x8769)[0x9003] = f"2024:0{1 + n % 9}:{10 + n % 18} 1{n % 10}:30:00"
    return exif


def generate(folder: Path, phones: int = 40, screenshots: int = 5, web: int = 5, seed: int = 0) -> list[Path]:
    """Write the photo set (once) and return its paths."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    wanted = {"phones": phones, "screenshots": screenshots, "web": web, "seed": seed, "version": 2}
    if manifest.exists() and json.loads(manifest.read_text()).get("spec") == wanted:
        return [folder / p for p in json.loads(manifest.read_text())["files"]]
    rng = np.random.default_rng(seed)
    files: list[str] = []
    for n in range(phones):
        name = f"IMG_{n:04d}.jpg"
        _phone_picture(rng, PHONE).save(folder / name, "JPEG", quality=90, exif=_exif(rng, n).tobytes())
        files.append(name)
    for n in range(screenshots):
        shot = np.full((1080, 1920, 3), 245, dtype=np.uint8)
        for _ in range(30):  # windows and text-like bars
            x, y = rng.integers(0, 1800), rng.integers(0, 1000)
            shot[y : y + rng.integers(8, 300), x : x + rng.integers(40, 600)] = rng.integers(0, 255, 3)
        name = f"Screenshot_{n:02d}.png"
        Image.fromarray(shot).save(folder / name)
        files.append(name)
    for n in range(web):
        name = f"web_{n:02d}.jpg"
        _phone_picture(rng, (800, 600)).save(folder / name, "JPEG", quality=80)
        files.append(name)
    manifest.write_text(json.dumps({"spec": wanted, "files": files}))
    return [folder / f for f in files]


def replicate(sources: list[Path], folder: Path, count: int) -> list[Path]:
    """`count` distinct files made from `sources` (once): copies, each with a unique trailer after the
    image data, which decoders ignore but content hashes see. Decoding costs what the source costs,
    and generating thousands of 12 MP photos takes seconds instead of an hour."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in range(count):
        src = sources[n % len(sources)]
        path = folder / f"{src.stem}_{n:05d}{src.suffix}"
        if not path.exists():
            path.write_bytes(src.read_bytes() + f"clipdex-copy-{n:05d}".encode())
        out.append(path)
    return out
