"""Three captioned domains the built-in model never saw, for proving fine-tuning defaults.

Each picture is drawn with numpy from a seeded generator and captioned by the
generator itself, in two phrasings. Every caption word that carries meaning is new
to `clipdex-tiny`: six ink colours it never saw ("teal", "pink", …) and, per domain,
eight pattern names (textures), the count words one … nine with "beads" (counting),
or eight arrangements of tiles (layouts). The base model scores near chance on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from indexer.decode import DecodedImage, InputSpec, decode_bytes
from retrieval.pair_data import PairData, build

SIZE = 64
INKS: dict[str, tuple[int, int, int]] = {
    "teal": (0, 128, 128), "pink": (250, 110, 180), "brown": (130, 70, 20),
    "navy": (20, 20, 120), "olive": (128, 128, 0), "cyan": (0, 215, 225),
}  # fmt: skip
PAPER = (235, 228, 210)
PATTERNS = ("grid", "hatched", "crosshatched", "speckled", "bricks", "rings", "zigzag", "sectors")
COUNTS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LAYOUTS = ("row", "column", "slash", "backslash", "corners", "plus", "frame", "cluster")

Drawing = tuple[np.ndarray, tuple[str, str]]  # (H, W) bool ink mask, two captions


@dataclass(frozen=True)
class GeneratedDomain:
    name: str
    draw: Callable[[np.random.Generator, str], Drawing]  # (rng, ink) → mask and captions

    def pairs(self, count: int, seed: int, spec: InputSpec) -> PairData:
        """`count` pictures (the same for the same arguments), decoded as image files are."""
        rng = np.random.default_rng([seed, sum(map(ord, self.name))])
        pixels, captions = [], []
        for _ in range(count):
            ink = str(rng.choice(list(INKS)))
            mask, caps = self.draw(rng, ink)
            picture = np.where(mask[..., None], np.array(INKS[ink]), np.array(PAPER)).astype(np.uint8)
            pixels.append(_decode(picture, spec))
            captions.append(caps)
        return build(pixels, captions)


def _decode(picture: np.ndarray, spec: InputSpec) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture, "RGB").save(buf, "PNG", compress_level=1)
    decoded = decode_bytes(buf.getvalue(), spec)
    if not isinstance(decoded, DecodedImage):
        raise RuntimeError(f"a drawn picture did not decode: {decoded.reason}")
    return decoded.pixels


def _texture(rng: np.random.Generator, ink: str) -> Drawing:
    name = str(rng.choice(PATTERNS))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    xx, yy = xx + rng.uniform(0, 16), yy + rng.uniform(0, 16)  # a random phase
    period = float(rng.uniform(7, 10))
    masks = {
        "grid": ((xx % period) < 2) | ((yy % period) < 2),
        "hatched": ((xx + yy) % period) < period / 2,
        "crosshatched": (((xx + yy) % period) < 2) | (((xx - yy) % period) < 2),
        "speckled": rng.random((SIZE, SIZE)) < 0.2,
        "bricks": ((yy % period) < 2) | ((((xx + (yy // period % 2) * period) % (2 * period)) < 2)),
        "rings": (np.hypot(xx - xx.mean(), yy - yy.mean()) % period) < period / 2,
        "zigzag": ((yy + np.abs((xx % period) - period / 2)) % period) < period / 2,
        "sectors": (np.arctan2(yy - yy.mean(), xx - xx.mean()) * 4 / np.pi) % 2 < 1,
    }
    return masks[name], (f"a {ink} {name} texture", f"{name} pattern in {ink}")


def _counting(rng: np.random.Generator, ink: str) -> Drawing:
    n = int(rng.integers(1, 10))
    cells = rng.permutation(16)[:n]  # a 4x4 grid of places, jittered
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for c in cells:
        cx, cy = 8 + 16 * (c % 4) + rng.uniform(-2, 2), 8 + 16 * (c // 4) + rng.uniform(-2, 2)
        mask |= np.hypot(xx - cx, yy - cy) < 4.5
    word = COUNTS[n - 1]
    plural = "bead" if n == 1 else "beads"
    return mask, (f"{word} {ink} {plural}", f"{ink} {plural}, {word} in all")


def _layout(rng: np.random.Generator, ink: str) -> Drawing:
    name = str(rng.choice(LAYOUTS))
    line = [0.2, 0.35, 0.5, 0.65, 0.8]
    at = float(rng.uniform(0.3, 0.7))
    cells = {
        "row": [(x, at) for x in line],
        "column": [(at, y) for y in line],
        "slash": [(x, 1 - x) for x in line],
        "backslash": [(x, x) for x in line],
        "corners": [(0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8)],
        "plus": [(0.5, 0.5), (0.5, 0.25), (0.5, 0.75), (0.25, 0.5), (0.75, 0.5)],
        "frame": [(x, y) for x in (0.2, 0.5, 0.8) for y in (0.2, 0.5, 0.8) if (x, y) != (0.5, 0.5)],
        "cluster": [(at + dx, at + dy) for dx in (-0.09, 0.09) for dy in (-0.09, 0.09)],
    }[name]
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for x, y in cells:
        cx, cy = int(x * SIZE + rng.uniform(-1.5, 1.5)), int(y * SIZE + rng.uniform(-1.5, 1.5))
        mask[max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4] = True
    return mask, (f"{ink} tiles in a {name}", f"a {name} of {ink} tiles")


DOMAINS = {d.name: d for d in (GeneratedDomain("textures", _texture), GeneratedDomain("counting", _counting),
                                GeneratedDomain("layouts", _layout))}  # fmt: skip
