"""Tags from labels: zero-shot classification of the library's images, and folder names as tags.

Each label is scored by a prompt ensemble: the mean of the unit text vectors of
TEMPLATES filled with the label ("a photo of a beach", "a beach", …), made unit again.

The rule, per image x and label l (cosines of unit vectors, computed from the
image vectors the library already holds; no image is decoded again):

1. score(x, l) = cos(x, l) − the mean of cos(x, t) over every label t of the set
   (as zero-shot classification compares labels with each other); for a set of fewer
   than CENTRE_ON_LABELS labels, over the labels and the BACKGROUND texts (generic
   phrases that describe no picture in particular). Subtracting what an image scores
   against text in general removes what differs from one image to the next but says
   nothing about the label (how bright it is, the gap between image and text vectors).
2. A background text scored the same way is a label that fits no picture: it gives
   the spread of scores of labels that do not apply. For every background text b, its
   scores over the library's images are standardised ((score − mean) / sd over the
   images), and κ is the (1 − ALPHA) quantile of all of them.
3. The threshold of label l is mean_l + κ · sd_l, its own mean and sd over the
   library's images: l tags x when score(x, l) is above it, that is when l stands
   out of its own scores as far as only the top ALPHA of the background's do.
4. On its own, step 3 would tag about ALPHA of the library with any label, even one
   that no picture shows. So the threshold is never below FLOOR, the FLOOR_QUANTILE
   quantile of the background's scores over every image (not standardised): a label
   must also score above what almost every (image, background text) pair scores.

Thresholds are calibrated on the images the library holds when a label set is first
used with a model, and kept (in the catalog's settings) while the label set, the
templates and the background stay the same: a later run tags new and changed images
with the same thresholds, and leaves the others alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from indexer.catalog import IMAGE, Catalog, ModelRow
from indexer.catalog_tags import FOLDERS, ItemTags, TagTarget
from indexer.decode import path_str

TextEncodeFn = Callable[[list[str]], np.ndarray]  # texts → (T, D) unit vectors

RULE = "relative-to-background/v1"
CENTRE_ON_LABELS = 5  # a set this large is its own reference; a smaller one is centred with the background too
ALPHA = 0.15  # the share of (image, background text) pairs that would pass as tags
# Chosen on world scenes of seed 777 (neither the tests' nor the benchmark's): it drops
# the pictures tagged with two shapes no picture holds from 15% to 2-3%.
FLOOR_QUANTILE = 0.9
TEMPLATES = (
    "a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.", "a {}.", "{}",
    "a close-up photo of a {}.", "a photo of something {}.", "a bright photo of a {}.", "a dark photo of a {}.",
)
BACKGROUND = (
    "a photo", "an image", "a picture", "a photo of something", "a picture of a thing", "something", "a thing",
    "an object", "a scene", "a view", "a background", "a texture", "a pattern", "a shape", "a colour",
    "a photo of people", "a landscape", "a city street", "a room", "a document", "a screenshot", "food",
    "an animal", "a building", "a vehicle", "a plant", "the sky", "water", "a close-up", "a blurry photo",
)
STARTER_LABELS = (
    "beach", "mountain", "forest", "lake", "sea", "snow", "sunset", "night sky", "city", "street", "building",
    "house", "interior", "kitchen", "food", "drink", "cake", "person", "group of people", "child", "baby",
    "dog", "cat", "bird", "horse", "flower", "tree", "garden", "car", "bicycle", "train", "airplane", "boat",
    "document", "screenshot", "text", "painting", "sport", "concert", "wedding",
)
BATCH = 500  # items per write transaction


@dataclass
class TagReport:
    """What one `clipdex tag` run did, as its --json prints it."""

    model: str | None = None
    labels: int = 0
    calibrated: bool = False  # thresholds were (re)computed: a new label set for this model
    tagged: int = 0  # images given their tags this run
    unchanged: int = 0  # images already tagged with this label set, left alone
    waiting: int = 0  # images the model has no vector for yet (the next `clipdex index` gives them one)
    tags: int = 0  # tags written this run
    folder_tagged: int = 0
    folder_unchanged: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["thresholds"] = {k: round(v, 4) for k, v in self.thresholds.items()}
        return d


def read_labels(text: str) -> list[str]:
    """Labels from a file's text: one a line; blank lines and lines starting with # are left out."""
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def label_vectors(encode: TextEncodeFn, labels: Sequence[str], templates: Sequence[str] = TEMPLATES) -> np.ndarray:
    """One unit vector per label, the mean of its prompts' unit vectors: (L, D)."""
    prompts = [t.format(label) for label in labels for t in templates]
    vecs = encode(prompts).reshape(len(labels), len(templates), -1)  # (L, P, D)
    mean = vecs.mean(axis=1)  # (L, D)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def relative_scores(images: np.ndarray, labels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the labels and of the background texts, less each image's mean over the labels
    (with the background texts, for fewer than CENTRE_ON_LABELS labels): ((N, L), (N, K))."""
    s, sb = images @ labels.T, images @ background.T  # (N, L), (N, K)
    reference = s if labels.shape[0] >= CENTRE_ON_LABELS else np.concatenate([s, sb], axis=1)
    base = reference.mean(axis=1, keepdims=True)  # (N, 1)
    return s - base, sb - base


def calibrate(scores: np.ndarray, background: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Each label's threshold, mean + κ·sd of its scores, κ from the background's standardised scores,
    and at least the background's FLOOR_QUANTILE quantile: (L,)."""
    sd_b = np.maximum(background.std(axis=0), 1e-9)  # (K,)
    z = (background - background.mean(axis=0)) / sd_b  # (N, K)
    kappa = float(np.quantile(z, 1.0 - alpha))
    floor = float(np.quantile(background, FLOOR_QUANTILE))
    return np.maximum(scores.mean(axis=0) + kappa * scores.std(axis=0), floor)  # (L,)


def labels_key(labels: Sequence[str]) -> str:
    """What a model's tags depend on besides the image: changing any of it re-tags every image."""
    spec = {"rule": RULE, "alpha": ALPHA, "floor_quantile": FLOOR_QUANTILE, "centre_on_labels": CENTRE_ON_LABELS, "labels": list(labels), "templates": TEMPLATES, "background": BACKGROUND}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def tag_with_labels(catalog: Catalog, model: ModelRow, labels: Sequence[str], encode: TextEncodeFn, report: TagReport) -> None:
    """Tag the model's new and changed images (every image, for a new label set) with `labels`."""
    key = labels_key(labels)
    report.model, report.labels = model.name, len(labels)
    targets, report.unchanged = catalog.tag_targets(model.id, key)
    setting = f"tags.thresholds.{model.id}"
    stored = json.loads(catalog.get_setting(setting) or "{}")
    if not targets and stored.get("key") == key:
        report.thresholds = dict(zip(labels, stored["thresholds"]))
        return
    vectors, background = label_vectors(encode, labels), label_vectors(encode, BACKGROUND, ("{}",))
    if stored.get("key") == key:
        thresholds = np.asarray(stored["thresholds"], dtype=np.float32)
    else:
        _, every = catalog.vectors(model.id, IMAGE)  # (N, D): the library the thresholds fit
        if len(every) == 0:
            report.waiting = len(targets)
            return
        thresholds = calibrate(*relative_scores(every, vectors, background))
        catalog.set_setting(setting, json.dumps({"key": key, "thresholds": [float(t) for t in thresholds]}))
        report.calibrated = True
    report.thresholds = dict(zip(labels, (float(t) for t in thresholds)))
    for start in range(0, len(targets), BATCH):
        chunk = targets[start : start + BATCH]
        ids, vecs = catalog.vectors(model.id, IMAGE, [t.id for t in chunk])
        by_id = {t.id: t for t in chunk}
        report.waiting += len(chunk) - len(ids)
        if not len(ids):
            continue
        scores, _ = relative_scores(vecs, vectors, background)  # (B, L)
        batch = [
            ItemTags(by_id[int(i)], tuple((labels[int(j)], float(row[j])) for j in np.flatnonzero(row > thresholds)))
            for i, row in zip(ids, scores)
        ]  # fmt: skip
        report.tags += catalog.write_tags(model.id, key, batch)
        report.tagged += len(batch)


def tag_folders(catalog: Catalog, report: TagReport) -> None:
    """Each image's folders below its root, as tags (`2021/Beach trip/a.jpg` → "2021", "Beach trip")."""
    roots = sorted((path_str(r).rstrip("/") for r in catalog.list_roots()), key=len, reverse=True)
    targets, report.folder_unchanged = catalog.tag_targets(FOLDERS, "folders")
    for start in range(0, len(targets), BATCH):
        batch = [ItemTags(t, tuple((name, None) for name in folder_names(t, roots))) for t in targets[start : start + BATCH]]
        report.tags += catalog.write_tags(FOLDERS, "folders", batch)
        report.folder_tagged += len(batch)


def folder_names(target: TagTarget, roots: Sequence[str]) -> list[str]:
    """The folders between the image's root (the longest that holds it) and the image; none outside every root."""
    for root in roots:
        if target.path.startswith(root + "/"):
            rel = target.path[len(root) + 1 :]
            return list(dict.fromkeys(part for part in rel.split("/")[:-1] if part))
    return []


__all__ = [
    "ALPHA", "BACKGROUND", "STARTER_LABELS", "TEMPLATES", "TagReport", "calibrate", "label_vectors", "read_labels",
    "relative_scores", "tag_folders", "tag_with_labels",
]
