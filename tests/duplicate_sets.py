"""Generated photo sets whose duplicate truth is known, for tests/test_duplicates.py and
benchmarks/duplicates.py.

Each scene is a photo-like picture (sky gradient, horizon, shapes, a subject, fine texture)
rendered from a seed on a canvas larger than the frame, so a burst is the same scene with the
frame shifted a little and the subject moved, a second apart. For every scene the set holds:
- exact: a byte copy, and a PNG of the same decoded pixels (EXIF gone, bytes different);
- near: re-encodes at JPEG quality 85, 60 and 35, resizes to 1/2 and 1/4, a 5% crop, and an
  EXIF-stripped re-save;
- burst: three more shots 1 s apart (frame shifted, subject moved);
- another day: two shots of the same scene a day later (their own burst, never merged with day one);
- a lookalike: another scene with the same palette and theme but another layout, no EXIF.
`Truth.label(path)` says which photo (and which shot) each file is.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FRAME = (480, 360)
MARGIN = 40  # canvas border a burst's frame shift moves into
BASE_TIME = datetime(2024, 7, 1, 10, 0, 0)


@dataclass
class Truth:
    """Which (scene, shot) each file shows; copies of one shot share both."""

    shots: dict[str, tuple[int, int]] = field(default_factory=dict)  # file name -> (scene, shot)
    tier: dict[str, str] = field(default_factory=dict)  # file name -> how it relates to its scene's shot 0

    def add(self, path: Path, scene: int, shot: int, tier: str) -> None:
        self.shots[path.name] = (scene, shot)
        self.tier[path.name] = tier


def _exif(taken: datetime | None) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R6"
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    return exif.tobytes()


def render(seed: int, shot: int = 0, layout_seed: int | None = None) -> Image.Image:
    """The scene of `seed` (palette) with layout `layout_seed` (default: the same seed), as shot `shot`:
    later shots shift the frame by 6 px a shot and move the subject."""
    pal = np.random.default_rng(seed)
    sky_top, sky_bottom, ground = (tuple(int(v) for v in pal.integers(20, 235, 3)) for _ in range(3))
    shape_colours = [tuple(int(v) for v in pal.integers(0, 256, 3)) for _ in range(5)]
    rng = np.random.default_rng(seed * 7919 + 1 if layout_seed is None else layout_seed * 104729 + 3)
    w, h = FRAME[0] + 2 * MARGIN, FRAME[1] + 2 * MARGIN
    t = np.linspace(0, 1, h)[:, None, None]
    canvas = ((1 - t) * np.array(sky_top) + t * np.array(sky_bottom)) * np.ones((1, w, 1))  # (H, W, 3)
    img = Image.fromarray(canvas.astype(np.uint8))
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.7))
    d.rectangle((0, horizon, w, h), fill=ground)
    for colour in shape_colours:
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        rx, ry = int(rng.integers(20, 110)), int(rng.integers(20, 90))
        if rng.random() < 0.5:
            d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour)
        else:
            d.polygon([(x - rx, y + ry), (x, y - ry), (x + rx, y + ry)], fill=colour)
    # The subject walks across the frame, 14 px a shot.
    sx, sy = int(w * rng.uniform(0.3, 0.6)) + 14 * shot, int(horizon - 30)
    d.ellipse((sx - 18, sy - 40, sx + 18, sy + 40), fill=(250, 250, 250))
    texture = np.random.default_rng(seed * 31 + shot).normal(0, 10, (h // 4, w // 4, 1))
    grain = np.asarray(Image.fromarray(np.clip(texture[..., 0] + 128, 0, 255).astype(np.uint8)).resize((w, h)))
    pixels = np.clip(np.asarray(img, dtype=np.int16) + grain[..., None].astype(np.int16) - 128, 0, 255).astype(np.uint8)
    dx = MARGIN + 6 * shot - 6 * (shot // 4) * 4  # shifts stay inside the margin
    return Image.fromarray(pixels[MARGIN : MARGIN + FRAME[1], dx : dx + FRAME[0]])


def write_set(folder: Path, scenes: int, first_seed: int = 1) -> Truth:
    """Write the set for `scenes` scenes into `folder`; returns its truth."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = Truth()
    for k in range(scenes):
        seed = first_seed + k
        taken = BASE_TIME + timedelta(hours=3 * k)
        original = render(seed)
        o = folder / f"s{seed}-original.jpg"
        original.save(o, "JPEG", quality=92, exif=_exif(taken))
        truth.add(o, seed, 0, "original")
        copy = folder / f"s{seed}-copy.jpg"
        shutil.copyfile(o, copy)
        truth.add(copy, seed, 0, "exact")
        with Image.open(o) as decoded:
            same_pixels = folder / f"s{seed}-pixels.png"
            decoded.convert("RGB").save(same_pixels, "PNG")
        truth.add(same_pixels, seed, 0, "exact")
        for q in (85, 60, 35):
            p = folder / f"s{seed}-q{q}.jpg"
            original.save(p, "JPEG", quality=q, exif=_exif(taken))
            truth.add(p, seed, 0, "near")
        for div in (2, 4):
            p = folder / f"s{seed}-half{div}.jpg"
            original.resize((FRAME[0] // div, FRAME[1] // div), Image.Resampling.LANCZOS).save(
                p, "JPEG", quality=90, exif=_exif(taken)
            )
            truth.add(p, seed, 0, "near")
        cx, cy = FRAME[0] // 20, FRAME[1] // 20
        crop = folder / f"s{seed}-crop.jpg"
        original.crop((cx, cy, FRAME[0] - cx, FRAME[1] - cy)).save(crop, "JPEG", quality=90, exif=_exif(taken))
        truth.add(crop, seed, 0, "near")
        stripped = folder / f"s{seed}-noexif.jpg"
        original.save(stripped, "JPEG", quality=90)
        truth.add(stripped, seed, 0, "near")
        for shot in (1, 2, 3):
            p = folder / f"s{seed}-burst{shot}.jpg"
            render(seed, shot).save(p, "JPEG", quality=92, exif=_exif(taken + timedelta(seconds=shot)))
            truth.add(p, seed, shot, "burst")
        for shot in (0, 2):
            p = folder / f"s{seed}-nextday{shot}.jpg"
            render(seed, shot + 1).save(p, "JPEG", quality=92, exif=_exif(taken + timedelta(days=1, seconds=shot)))
            truth.add(p, -seed, shot, "burst" if shot else "original")  # its own scene: another day
        look = folder / f"s{seed}-lookalike.jpg"
        render(seed, 0, layout_seed=seed + 10_000).save(look, "JPEG", quality=92)
        truth.add(look, 100_000 + seed, 0, "original")
    return truth
