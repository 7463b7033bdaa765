"""A deterministic captioned world: shapes on backgrounds, described in words.

No public image–caption data can be downloaded on the build machines, so clipdex
carries its own. A scene holds one group of identical shapes (one to three) or two
shapes in a spatial relation; each has a colour, size, texture and position, on a
background. Every scene gets two captions that name every attribute, in two word
orders ("a large red striped circle on the left on a grey background").

Two domains share colours, sizes, positions and backgrounds: `BASE` (the built-in
model is trained on it, with some shape–colour combinations held out of training)
and `NEW`, whose shape and texture words the built-in model never saw.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image, ImageDraw

from indexer.decode import DecodedImage, InputSpec, decode_bytes
from retrieval.pair_data import PairData, build

Split = Literal["train", "test", "held-out-combos"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128)}
SIZES = {"small": 0.11, "large": 0.2}  # radius as a fraction of the image side
POSITIONS = {"on the left": (0.27, 0.5), "on the right": (0.73, 0.5), "at the top": (0.5, 0.27),
             "at the bottom": (0.5, 0.73), "in the centre": (0.5, 0.5)}  # fmt: skip
RELATIONS = {"above": (0.0, -1.0), "below": (0.0, 1.0), "left of": (-1.0, 0.0), "right of": (1.0, 0.0)}
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
PLURALS = {"cross": "crosses"}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Domain:
    """The shape and texture words of a world, and the shape–colour pairs kept out of training."""

    name: str
    shapes: tuple[str, ...]
    textures: tuple[str, ...]  # "plain" is never written in captions
    held_out: frozenset[tuple[str, str]] = frozenset()


BASE = Domain(
    "base",
    ("circle", "square", "triangle", "cross"),
    ("plain", "striped", "dotted"),
    frozenset({("circle", "green"), ("square", "purple"), ("triangle", "orange"), ("cross", "blue")}),
)
NEW = Domain("new", ("hexagon", "star", "ring", "diamond"), ("plain", "checkered", "wavy"))


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str
    texture: str
    x: float  # centre, as a fraction of the image side
    y: float


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...]
    captions: tuple[str, ...]


def make_scenes(count: int, seed: int, domain: Domain = BASE, split: Split = "train") -> list[Scene]:
    """`count` scenes, the same for the same arguments in every process.

    "train" scenes avoid the domain's held-out shape–colour pairs, "held-out-combos"
    scenes contain at least one, and "test" scenes are drawn like "train" but from
    another random stream.
    """
    stream = {"train": 0, "test": 1, "held-out-combos": 2}[split]
    rng = np.random.default_rng([seed, stream, sum(map(ord, domain.name))])
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = _random_scene(rng, domain)
        combos = {(t.shape, t.colour) for t in scene.things}
        has_held_out = bool(combos & domain.held_out)
        if has_held_out == (split == "held-out-combos"):
            scenes.append(scene)
    return scenes


def _random_scene(rng: np.random.Generator, domain: Domain) -> Scene:
    bg = str(rng.choice(list(BACKGROUNDS)))
    if rng.random() < 0.35:
        return _relation_scene(rng, domain, bg)
    shape, colour, texture = (str(rng.choice(v)) for v in (domain.shapes, list(COLOURS), domain.textures))
    n = int(rng.choice([1, 1, 2, 3]))
    size = "small" if n == 3 else str(rng.choice(list(SIZES)))
    where = ""
    if n == 1:
        where = str(rng.choice(list(POSITIONS)))
        centres = [_jitter(rng, POSITIONS[where])]
    else:
        centres = _spread(rng, n)
    things = tuple(Thing(shape, colour, size, texture, x, y) for x, y in centres)
    return Scene(bg, things, _group_captions(things[0], n, where, bg))


def _relation_scene(rng: np.random.Generator, domain: Domain, bg: str) -> Scene:
    rel = str(rng.choice(list(RELATIONS)))
    dx, dy = RELATIONS[rel]
    first = _attributes(rng, domain)
    second = _attributes(rng, domain)
    while second[:2] == first[:2]:
        second = _attributes(rng, domain)
    cx, cy = _jitter(rng, (0.5, 0.5), 0.03)
    gap = 0.25
    a = Thing(*first, x=cx + dx * gap, y=cy + dy * gap)
    b = Thing(*second, x=cx - dx * gap, y=cy - dy * gap)
    captions = (
        f"{_phrase(a)} {rel} {_phrase(b)} on a {bg} background",
        f"on a {bg} background, {_phrase(b, swap=True)} {INVERSE[rel]} {_phrase(a, swap=True)}",
    )
    return Scene(bg, (a, b), captions)


def _attributes(rng: np.random.Generator, domain: Domain) -> tuple[str, str, str, str]:
    shape = str(rng.choice(domain.shapes))
    return shape, str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))), str(rng.choice(domain.textures))


def _jitter(rng: np.random.Generator, centre: tuple[float, float], by: float = 0.05) -> tuple[float, float]:
    jx, jy = rng.uniform(-by, by, size=2)
    return centre[0] + float(jx), centre[1] + float(jy)


def _spread(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """`n` centres that keep the shapes apart: two side by side or stacked, three on a 3x3 grid."""
    if n == 2:
        pair = [(0.27, 0.5), (0.73, 0.5)] if rng.random() < 0.5 else [(0.5, 0.27), (0.5, 0.73)]
        return [_jitter(rng, c, 0.03) for c in pair]
    cells = rng.permutation(9)[:n]
    return [_jitter(rng, (0.2 + 0.3 * (c % 3), 0.2 + 0.3 * (c // 3))) for c in cells]


def _phrase(t: Thing, swap: bool = False, n: int = 1) -> str:
    texture = "" if t.texture == "plain" else f"{t.texture} "
    shape = t.shape if n == 1 else PLURALS.get(t.shape, t.shape + "s")
    words = f"{texture}{t.colour}" if swap else f"{t.colour} {texture}".strip()
    return f"{COUNT_WORDS[n]} {t.size} {words} {shape}".replace("  ", " ")


def _group_captions(t: Thing, n: int, where: str, bg: str) -> tuple[str, ...]:
    place = f" {where}" if where else ""
    return (
        f"{_phrase(t, n=n)}{place} on a {bg} background",
        f"on a {bg} background, {_phrase(t, swap=True, n=n)}{place}",
    )


def partial_captions(scene: Scene) -> tuple[str, ...]:
    """Shorter captions that name only some of what a scene shows, as people's alt-texts do.

    For each kind of thing in the scene: "a circle", "a red circle", "a large circle on a
    grey background", "something red". Training on them too (retrieval.demo.train_tiny)
    teaches the text tower what a shape or a colour alone looks like, which zero-shot
    tags ask about: full captions always name both together.
    """
    out: list[str] = []
    for shape, colour, size in dict.fromkeys((t.shape, t.colour, t.size) for t in scene.things):
        on_background = f"a {size} {shape} on a {scene.background} background"
        out += [f"a {shape}", f"a {colour} {shape}", on_background, f"something {colour}"]
    return tuple(out)


# -- pictures --------------------------------------------------------------------------------


def render(scene: Scene, size: int = 128) -> Image.Image:
    """Draw a scene as an RGB picture `size` pixels square."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    for thing in scene.things:
        mask = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask), thing, size)
        img.paste(_texture(thing, size), (0, 0), mask)
    return img


def _draw_shape(draw: ImageDraw.ImageDraw, t: Thing, size: int) -> None:
    r = SIZES[t.size] * size
    cx, cy = t.x * size, t.y * size
    box = (cx - r, cy - r, cx + r, cy + r)
    if t.shape == "circle":
        draw.ellipse(box, fill=255)
    elif t.shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=255)
    elif t.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=255)
    elif t.shape == "cross":
        w = 0.38 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif t.shape == "ring":
        draw.ellipse(box, fill=255)
        q = 0.5 * r
        draw.ellipse((cx - q, cy - q, cx + q, cy + q), fill=0)
    else:
        draw.polygon(_polygon(t.shape, cx, cy, r), fill=255)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "hexagon":
        angles, radii = np.arange(6) * np.pi / 3, np.full(6, r)
    elif shape == "star":
        angles, radii = np.arange(10) * np.pi / 5 - np.pi / 2, np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "diamond":
        angles, radii = np.arange(4) * np.pi / 2, np.array([0.75 * r, r, 0.75 * r, r])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [(cx + float(d * np.cos(a)), cy + float(d * np.sin(a))) for a, d in zip(angles, radii)]


def _texture(t: Thing, size: int) -> Image.Image:
    """The thing's colour, patterned with a darker shade."""
    colour = np.array(COLOURS[t.colour], dtype=np.float32)
    pixels = np.where(_pattern(t.texture, size)[..., None], colour * 0.35, colour)  # (S, S, 3)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


@functools.lru_cache(maxsize=16)
def _pattern(texture: str, size: int) -> np.ndarray:
    """Where a texture is dark: (S, S) bool, in units of a 128-pixel picture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) * (128.0 / size)
    if texture == "striped":
        return (xx // 8) % 2 == 1
    if texture == "dotted":
        return ((xx % 14 - 7) ** 2 + (yy % 14 - 7) ** 2) < 12.0
    if texture == "checkered":
        return ((xx // 8) + (yy // 8)) % 2 == 1
    if texture == "wavy":
        return ((yy + 4.0 * np.sin(xx / 4.0)) // 8) % 2 == 1
    return np.zeros((size, size), dtype=bool)


def png_bytes(scene: Scene, size: int = 128) -> bytes:
    buf = io.BytesIO()
    render(scene, size).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def write_world(folder: Path, scenes: Sequence[Scene], size: int = 128, name: str = "captions.csv") -> Path:
    """Write scenes as PNG files plus a CSV of (image, caption) rows; return the CSV's path."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / name
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["image", "caption"])
        for i, scene in enumerate(scenes):
            file = f"scene{i:05d}.png"
            render(scene, size).save(folder / file, "PNG")
            for caption in scene.captions:
                out.writerow([file, caption])
    return csv_path


def from_scenes(scenes: Sequence[Scene], spec: InputSpec, size: int = 128) -> PairData:
    """Render synthetic scenes and decode them through the same path as image files."""
    return build(list(render_pixels(scenes, spec, size)), [s.captions for s in scenes])


def render_pixels(scenes: Sequence[Scene], spec: InputSpec, size: int = 128) -> np.ndarray:
    """(N, H, W, 3) uint8: each scene rendered, then decoded the way an indexed file is."""
    pixels = []
    for scene in scenes:
        decoded = decode_bytes(png_bytes(scene, size), spec)
        if not isinstance(decoded, DecodedImage):
            raise RuntimeError(f"a rendered scene did not decode: {decoded.reason}")
        pixels.append(decoded.pixels)
    return np.stack(pixels)


REFERENCE_SEED = 20240  # the base-domain pairs `--keep-base` measures retention on: never the demo's or a benchmark's
REHEARSAL_SEED = 20241  # the base-domain pairs fine-tuning rehearses: "train" scenes, never the ones retention is measured on


def reference_for(arch: str, spec: InputSpec, count: int = 200) -> PairData | None:
    """Pairs of the world `clipdex-tiny` was trained on (for models of that architecture), else None."""
    if arch != "clipdex-tiny":
        return None
    return from_scenes(make_scenes(count, REFERENCE_SEED, BASE, split="test"), spec)


@functools.lru_cache(maxsize=4)  # ~1 s to draw; fine-tuning runs in one process (tests, benchmarks) share it
def rehearsal_for(arch: str, spec: InputSpec, count: int = 400) -> PairData | None:
    """Pairs of the world `clipdex-tiny` was trained on, to rehearse while fine-tuning (disjoint from reference_for's)."""
    if arch != "clipdex-tiny":
        return None
    return from_scenes(make_scenes(count, REHEARSAL_SEED, BASE, split="train"), spec)
