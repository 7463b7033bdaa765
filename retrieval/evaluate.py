"""Retrieval metrics on image–caption pairs: recall@1/5/10 both ways and median rank.

Queries are the distinct captions (text→image) and the distinct images
(image→text). A hit is any gallery item paired with the query, so when several
images share the exact same caption, any of them counts for that caption. Ties
are counted against the model: a hit tied with a non-hit ranks after it, so a
model that scores everything alike gets no credit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from indexer.encode import encode_images, encode_texts
from indexer.models import Encoder, ModelSpec
from retrieval.pair_data import PairData, load_pairs
from retrieval.pairs import Problem, read_pairs

if TYPE_CHECKING:
    from retrieval.library import Library

KS = (1, 5, 10)


@dataclass(frozen=True)
class DirectionMetrics:
    recall: tuple[float, float, float]  # R@1, R@5, R@10
    median_rank: float

    def to_dict(self) -> dict[str, float]:
        out = {f"R@{k}": round(r, 4) for k, r in zip(KS, self.recall)}
        return {**out, "median_rank": self.median_rank}


@dataclass(frozen=True)
class RetrievalMetrics:
    text_to_image: DirectionMetrics
    image_to_text: DirectionMetrics
    pairs: int
    shared_captions: int  # distinct captions paired with more than one image

    def to_dict(self) -> dict[str, object]:
        """The `clipdex eval --json` shape."""
        return {
            "text_to_image": self.text_to_image.to_dict(),
            "image_to_text": self.image_to_text.to_dict(),
            "pairs": self.pairs,
        }

    @property
    def score(self) -> float:
        """What early stopping maximises: mean R@1 of the two directions."""
        return (self.text_to_image.recall[0] + self.image_to_text.recall[0]) / 2


def first_hit_ranks(scores: np.ndarray, hits: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of each query's best-scoring hit; (Q, G) scores, ties ranked pessimistically."""
    ranks = np.empty(len(hits), dtype=np.int64)
    for q, row in enumerate(scores):
        is_hit = np.zeros(row.shape[0], dtype=bool)
        is_hit[list(hits[q])] = True
        best = row[is_hit].max()
        ranks[q] = 1 + int(np.count_nonzero((row >= best) & ~is_hit))
    return ranks


def direction_metrics(ranks: np.ndarray) -> DirectionMetrics:
    recall = tuple(float(np.mean(ranks <= k)) for k in KS)
    return DirectionMetrics((recall[0], recall[1], recall[2]), float(np.median(ranks)))


def retrieval_metrics(similarity: np.ndarray, caption_images: Sequence[Sequence[int]], pairs: int) -> RetrievalMetrics:
    """Metrics from a (C, I) caption×image similarity matrix and each distinct caption's images."""
    image_captions: list[list[int]] = [[] for _ in range(similarity.shape[1])]
    for c, imgs in enumerate(caption_images):
        for i in imgs:
            image_captions[i].append(c)
    t2i = first_hit_ranks(similarity, caption_images)
    i2t = first_hit_ranks(similarity.T, image_captions)
    shared = sum(1 for imgs in caption_images if len(set(imgs)) > 1)
    return RetrievalMetrics(direction_metrics(t2i), direction_metrics(i2t), pairs, shared)


def distinct_captions(data: PairData) -> tuple[list[str], list[list[int]]]:
    """Each distinct caption once, with the images it describes."""
    images: dict[str, list[int]] = {}
    for i, c in zip(data.image_of.tolist(), data.captions):
        images.setdefault(c, []).append(int(i))
    return list(images), list(images.values())


def evaluate(encoder: Encoder, data: PairData, model: torch.nn.Module | None = None, batch: int = 256) -> RetrievalMetrics:
    """Encode the pairs with the encoder (or with `model` in its place) and measure retrieval."""
    if model is not None:
        encoder = replace(encoder, model=model)
    captions, caption_images = distinct_captions(data)
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        img = np.concatenate([encode_images(encoder, data.pixels[s : s + batch]) for s in range(0, data.images, batch)])
        txt = np.concatenate([encode_texts(encoder, captions[s : s + batch]) for s in range(0, len(captions), batch)])
    finally:
        encoder.model.train(was_training)
    return retrieval_metrics(txt @ img.T, caption_images, data.pairs)  # (C, I)


def format_table(columns: dict[str, RetrievalMetrics]) -> str:
    """A text table with one column per model (e.g. base, tuned)."""
    names = list(columns)
    rows = [f"{'':<16}" + "".join(f"{n:>12}" for n in names)]
    for label, attr in (("text→image", "text_to_image"), ("image→text", "image_to_text")):
        for k_idx, k in enumerate(KS):
            vals = [getattr(columns[n], attr).recall[k_idx] for n in names]
            rows.append(f"{label + f' R@{k}':<16}" + "".join(f"{v:>12.3f}" for v in vals))
        ranks = [getattr(columns[n], attr).median_rank for n in names]
        rows.append(f"{label + ' median':<16}" + "".join(f"{v:>12g}" for v in ranks))
    return "\n".join(rows)


def evaluate_pairs(
    lib: Library, pairs: str | os.PathLike[str], spec: ModelSpec | None = None
) -> tuple[RetrievalMetrics, list[Problem]]:
    """Evaluate a model (default: the library's) on a pairs file; also return the skipped rows."""
    encoder = lib.encoder(spec) if spec is not None else lib.default_encoder()
    data, problems = load_pairs(read_pairs(pairs), encoder.input_spec)
    return evaluate(encoder, data), problems
