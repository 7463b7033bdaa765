"""Image–caption pairs decoded into memory, exactly as indexing decodes images.

`PairData` holds each distinct image once (as model-sized uint8 pixels) and each
pair as (image number, caption). Images are identified by a digest of their
pixels, so two files with the same picture are one image: the held-out split
never lets a copy of a validation image into training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from indexer.decode import DecodedImage, InputSpec, decode_images
from indexer.errors import InputFileError
from retrieval.pairs import PairFile, Problem


@dataclass(frozen=True)
class PairData:
    pixels: np.ndarray  # (N, H, W, 3) uint8, one row per distinct image
    keys: tuple[str, ...]  # (N,) pixel digests
    image_of: np.ndarray  # (P,) int64: the image of each pair
    captions: tuple[str, ...]  # (P,)

    @property
    def images(self) -> int:
        return len(self.keys)

    @property
    def pairs(self) -> int:
        return len(self.captions)

    def digest(self) -> str:
        """A digest of the (image, caption) pairs, independent of their order."""
        h = hashlib.sha256()
        for row in sorted(f"{self.keys[i]}\t{c}" for i, c in zip(self.image_of.tolist(), self.captions)):
            h.update(row.encode() + b"\n")
        return h.hexdigest()[:16]

    def subset(self, images: Sequence[int]) -> PairData:
        """The given images (by number) and all their pairs, renumbered in the given order."""
        new = {old: n for n, old in enumerate(images)}
        keep = [p for p, i in enumerate(self.image_of.tolist()) if i in new]
        return PairData(
            pixels=self.pixels[list(images)],
            keys=tuple(self.keys[i] for i in images),
            image_of=np.array([new[int(self.image_of[p])] for p in keep], dtype=np.int64),
            captions=tuple(self.captions[p] for p in keep),
        )

    def without(self, keys: set[str]) -> PairData:
        """Drop the images whose digest is in `keys`."""
        return self.subset([i for i, k in enumerate(self.keys) if k not in keys])


def build(pixels: Sequence[np.ndarray], captions_of: Sequence[Sequence[str]]) -> PairData:
    """Group images by pixel digest (merging captions of identical pictures)."""
    index: dict[str, int] = {}
    kept: list[np.ndarray] = []
    seen: list[set[str]] = []
    image_of: list[int] = []
    captions: list[str] = []
    for px, caps in zip(pixels, captions_of):
        key = hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()[:24]
        if key not in index:
            index[key] = len(kept)
            kept.append(px)
            seen.append(set())
        n = index[key]
        for c in caps:
            if c not in seen[n]:
                seen[n].add(c)
                image_of.append(n)
                captions.append(c)
    if not kept:
        raise InputFileError("no usable image–caption pairs")
    return PairData(np.stack(kept), tuple(index), np.array(image_of, dtype=np.int64), tuple(captions))


def load_pairs(pair_file: PairFile, spec: InputSpec) -> tuple[PairData, list[Problem]]:
    """Decode every image of the pairs once; return them with every skipped row (the reader's and bad images)."""
    by_image: dict[str, list[int]] = {}
    for n, pair in enumerate(pair_file.pairs):
        by_image.setdefault(str(pair.image), []).append(n)
    paths = list(by_image)
    problems: list[Problem] = list(pair_file.problems)
    pixels: list[np.ndarray] = []
    captions: list[list[str]] = []
    for path, result in zip(paths, decode_images(paths, spec)):
        rows = [pair_file.pairs[n] for n in by_image[path]]
        if isinstance(result, DecodedImage):
            pixels.append(result.pixels)
            captions.append([r.caption for r in rows])
        else:
            problems += [Problem(r.source, r.line, f"image {path}: {result.reason}") for r in rows]
    if not pixels:
        raise InputFileError(f"{pair_file.source} has no usable image–caption pairs ({len(problems)} skipped)")
    return build(pixels, captions), problems


def split_by_image(data: PairData, val_fraction: float, seed: int) -> tuple[PairData, PairData]:
    """(train, val): a fixed fraction of the images, chosen by digest, with all their pairs."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    if data.images < 2:
        raise InputFileError(f"only {data.images} distinct image: a held-out split needs at least 2")
    order = sorted(range(data.images), key=lambda i: hashlib.sha256(f"{seed}:{data.keys[i]}".encode()).digest())
    n_val = min(data.images - 1, max(1, round(val_fraction * data.images)))
    val = sorted(order[:n_val])
    val_set = set(val)
    return data.subset([i for i in range(data.images) if i not in val_set]), data.subset(val)
