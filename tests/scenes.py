"""Photo-like generated scenes (beach, mountains, city, forest, desert) for the browser test.

Random colour grids make a grid of noise; these give the page something that looks
like a photo library, with EXIF dates and cameras to filter on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from conftest import exif_with

THEMES = ("beach", "mountains", "city", "forest", "desert")
CAMERAS = (("Canon", "Canon EOS R6"), ("Apple", "iPhone 15"), ("FUJIFILM", "X-T4"))


def _gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]  # (H, 1, 1)
    rows = (1 - t) * np.array(top) + t * np.array(bottom)  # (H, 1, 3)
    return Image.fromarray(np.repeat(rows, w, axis=1).astype(np.uint8))


def scene(theme: str, seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    j = lambda c: tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in c)  # noqa: E731
    horizon = int(h * rng.uniform(0.45, 0.65))
    if theme == "beach":
        img = _gradient(size, j((255, 170, 90)), j((255, 225, 160)))
        d = ImageDraw.Draw(img)
        sx, r = int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.06, 0.12))
        d.ellipse((sx - r, horizon - r, sx + r, horizon + r), fill=j((255, 240, 200)))
        d.rectangle((0, horizon, w, h), fill=j((40, 90, 150)))
        d.polygon([(0, h), (0, int(h * 0.85)), (w, int(h * 0.78)), (w, h)], fill=j((230, 200, 150)))
    elif theme == "mountains":
        img = _gradient(size, j((110, 160, 230)), j((210, 230, 250)))
        d = ImageDraw.Draw(img)
        for k in range(3):
            peak = (int(w * rng.uniform(0.1, 0.9)), int(h * rng.uniform(0.15, 0.4)))
            base = int(w * rng.uniform(0.35, 0.6))
            shade = j((70 + 25 * k, 80 + 25 * k, 100 + 20 * k))
            d.polygon([(peak[0] - base, h), peak, (peak[0] + base, h)], fill=shade)
            cap = 0.25
            d.polygon([peak, (int(peak[0] - base * cap), int(peak[1] + (h - peak[1]) * cap)),
                       (int(peak[0] + base * cap), int(peak[1] + (h - peak[1]) * cap))], fill=(245, 248, 252))
    elif theme == "city":
        img = _gradient(size, j((10, 14, 40)), j((40, 30, 80)))
        d = ImageDraw.Draw(img)
        x = 0
        while x < w:
            bw, bh = int(rng.integers(40, 110)), int(h * rng.uniform(0.3, 0.8))
            d.rectangle((x, h - bh, x + bw, h), fill=j((25, 25, 35)))
            for wy in range(h - bh + 8, h - 8, 16):
                for wx in range(x + 6, x + bw - 8, 14):
                    if rng.random() < 0.45:
                        d.rectangle((wx, wy, wx + 6, wy + 8), fill=j((255, 210, 120)))
            x += bw + int(rng.integers(2, 10))
    elif theme == "forest":
        img = _gradient(size, j((170, 210, 190)), j((60, 110, 70)))
        d = ImageDraw.Draw(img)
        for _ in range(28):
            tx, base = int(rng.integers(0, w)), int(h * rng.uniform(0.7, 1.05))
            th, tw = int(h * rng.uniform(0.3, 0.6)), int(rng.integers(30, 70))
            d.polygon([(tx - tw, base), (tx, base - th), (tx + tw, base)], fill=j((25, 80, 40)))
    else:  # desert
        img = _gradient(size, j((120, 180, 240)), j((240, 220, 190)))
        d = ImageDraw.Draw(img)
        for k in range(3):
            y = horizon + k * int(h * 0.12)
            pts = [(x, y + int(20 * np.sin(x / rng.uniform(40, 90) + k))) for x in range(0, w + 20, 20)]
            d.polygon([(0, h), *pts, (w, h)], fill=j((215 - 15 * k, 160 - 10 * k, 100)))
    return img.filter(ImageFilter.GaussianBlur(1.2))


def write_scenes(root: Path, count: int) -> list[Path]:
    """`count` JPEGs in root/YEAR/THEME/, dated across 2019-2024, cycling through the themes."""
    paths = []
    start = datetime(2019, 3, 1, 9, 30)
    for n in range(count):
        theme = THEMES[n % len(THEMES)]
        when = start + timedelta(days=int(n * 2190 / count))
        path = root / str(when.year) / theme / f"IMG_{1000 + n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        exif = exif_with(taken=when.strftime("%Y:%m:%d %H:%M:%S"), camera=CAMERAS[n % len(CAMERAS)])
        scene(theme, seed=n).save(path, "JPEG", quality=88, exif=exif.tobytes())
        paths.append(path)
    return paths
