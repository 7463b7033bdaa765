"""Which pairs each training step takes, and the pull that keeps rehearsed pairs where the base model put them.

Everything random is drawn from generators seeded by (seed, epoch), so a step's
batch is a function of its number: a resumed run takes the same batches.

Rehearsal: given pairs of the base model's own domain, a share of every batch
comes from them (experience replay, as continual-learning methods do), and an
anchor pulls their image and text embeddings towards the base model's own
(feature distillation on a reference set, as ZSCL does for CLIP: Zheng et al.,
"Preventing Zero-Shot Transfer Degradation in Continual Learning of
Vision-Language Models", ICCV 2023). Replay alone puts a few easy base pairs
among new-domain negatives in each batch, which asks little of the base
world's fine distinctions; the anchor keeps its geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from indexer.encode import encode_images, encode_texts
from indexer.models import Encoder
from retrieval.contrastive import autocast
from retrieval.pair_data import PairData

REHEARSAL_SEED = 7919  # offsets the seed of the rehearsal batches from the new pairs' batches
ANCHOR_BATCH = 64  # images per forward pass when computing the base's embeddings of the rehearsal pairs


def pairs_by_image(data: PairData) -> list[np.ndarray]:
    lists: list[list[int]] = [[] for _ in range(data.images)]
    for p, i in enumerate(data.image_of.tolist()):
        lists[i].append(p)
    return [np.array(ps, dtype=np.int64) for ps in lists]


def epoch_order(seed: int, epoch: int, pair_lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(image order, one caption per image): each image once per epoch, with one of its captions."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(pair_lists))
    pick = np.array([ps[rng.integers(len(ps))] for ps in pair_lists], dtype=np.int64)
    return order, pick


class Batches:
    """Which pairs step n trains on: each new image once per epoch, plus, when rehearsing, a share from the base domain.

    Pair numbers index the new pairs first, then the rehearsal pairs (see `tokens`).
    """

    def __init__(self, data: PairData, rehearsal: PairData | None, batch_size: int, share: float, seed: int) -> None:
        self.data, self.rehearsal, self.seed = data, rehearsal, seed
        batch = min(batch_size, data.images + (rehearsal.images if rehearsal is not None else 0))
        self.n_old = 0 if rehearsal is None else min(round(batch * share), rehearsal.images, batch - 1)
        self.n_new = min(batch - self.n_old, data.images)
        self.per_epoch = max(1, data.images // self.n_new)
        self._lists = pairs_by_image(data)
        self._old_lists = pairs_by_image(rehearsal) if rehearsal is not None else []
        self._orders: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def tokens(self, encoder: Encoder) -> torch.Tensor:
        """(P + P_rehearsal, L) tokens of every caption, new pairs first."""
        captions = list(self.data.captions) + (list(self.rehearsal.captions) if self.rehearsal is not None else [])
        return encoder.tokenizer(captions).to(encoder.device)

    def at(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """((B, H, W, 3) uint8 pixels, (B,) pair numbers) of step `step`."""
        images, pairs = self._take("new", self.seed, self._lists, self.n_new, step)
        pixels = self.data.pixels[images]
        if self.rehearsal is not None and self.n_old > 0:
            old, old_pairs = self._take("old", self.seed + REHEARSAL_SEED, self._old_lists, self.n_old, step)
            pixels = np.concatenate([pixels, self.rehearsal.pixels[old]])
            pairs = np.concatenate([pairs, old_pairs + self.data.pairs])
        return pixels, pairs

    def _take(self, which: str, seed: int, lists: list[np.ndarray], size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, pos = divmod(step, max(1, len(lists) // size))
        if (which, epoch) not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != which}
            self._orders[(which, epoch)] = epoch_order(seed, epoch, lists)
        order, pick = self._orders[(which, epoch)]
        images = order[pos * size : (pos + 1) * size]
        return images, pick[images]

    def digest(self) -> str:
        old = self.rehearsal.digest() if self.rehearsal is not None and self.n_old > 0 else ""
        return self.data.digest() + (f"+{old}" if old else "")


@dataclass
class Anchored:
    """One step's rehearsed rows and the base's embeddings of them."""

    x: torch.Tensor  # (b, 3, H, W)
    tokens: torch.Tensor  # (b, L)
    image_target: torch.Tensor  # (b, D) unit
    text_target: torch.Tensor  # (b, D) unit
    weight: float

    def backward(self, net: torch.nn.Module, precision: str, lock_image: bool, lock_text: bool) -> float:
        """Accumulate into `.grad` weight × mean cosine distance to the targets (unlocked towers); return it."""
        loss = torch.zeros((), device=self.x.device)
        with autocast(self.x.device, precision):
            if not lock_image:
                image = F.normalize(net.encode_image(self.x).float(), dim=-1)  # type: ignore[operator]
                loss = loss + (1 - (image * self.image_target).sum(-1)).mean()
            if not lock_text:
                text = F.normalize(net.encode_text(self.tokens).float(), dim=-1)  # type: ignore[operator]
                loss = loss + (1 - (text * self.text_target).sum(-1)).mean()
        loss = loss * self.weight
        loss.backward()
        return float(loss.detach())


class Anchor:
    """The base model's embeddings of every rehearsal image and caption, computed once."""

    def __init__(self, batches: Batches, images: torch.Tensor, texts: torch.Tensor, weight: float) -> None:
        self.batches, self.images, self.texts, self.weight = batches, images, texts, weight

    @classmethod
    def of_base(cls, encoder: Encoder, batches: Batches, weight: float) -> Anchor:
        """Embed the rehearsal pairs with the encoder's (base) model, as search would."""
        old = batches.rehearsal
        assert old is not None  # callers build an anchor only when rehearsing
        was_training = encoder.model.training
        encoder.model.eval()
        try:
            images = np.concatenate([encode_images(encoder, old.pixels[i : i + ANCHOR_BATCH])
                                     for i in range(0, old.images, ANCHOR_BATCH)])  # fmt: skip  # (N, D)
            texts = np.concatenate([encode_texts(encoder, list(old.captions[i : i + ANCHOR_BATCH]))
                                    for i in range(0, old.pairs, ANCHOR_BATCH)])  # fmt: skip  # (P, D)
        finally:
            encoder.model.train(was_training)
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(encoder.device)  # noqa: E731
        return cls(batches, as_tensor(images), as_tensor(texts), weight)

    def at(self, x: torch.Tensor, tokens: torch.Tensor, pairs: np.ndarray) -> Anchored:
        """The rehearsed rows of a step's batch (its last n_old rows) and their targets."""
        n = self.batches.n_old
        old_pairs = torch.from_numpy(pairs[-n:] - self.batches.data.pairs).to(self.texts.device)
        assert self.batches.rehearsal is not None
        old_images = torch.from_numpy(self.batches.rehearsal.image_of).to(self.texts.device)[old_pairs]
        return Anchored(x[-n:], tokens[pairs[-n:]], self.images[old_images], self.texts[old_pairs], self.weight)
