"""Tags from labels: zero-shot classification of the library's images, and folder names as tags.

Labels come in sets of alternatives (a label file's `[name]` lines start a new set: the
colours, the shapes, the kinds of scene; a file without them is one set). Each label is
a prompt ensemble: the mean of the unit text vectors of a model's prompt templates
filled with the label, made unit again. The templates are the model card's
`prompt_templates` (phrases in the shape of the captions the model was trained on),
else CLIP's generic ones (TEMPLATES: "a photo of a {}.", "a {}.", …).

The rule, per image x and label l of a set S (cosines of unit vectors, computed from
the image vectors the library already holds; no image is decoded again):

1. score(x, l) = (cos(x, l) − mean) / sd, the mean and sd of cos(x, t) over the labels t
   of S (zero-shot classification compares a label with its alternatives). A set of
   fewer than CENTRE_ON_LABELS labels is too small to be its own reference: its labels
   are compared with the labels and the BACKGROUND texts (generic phrases that
   describe no picture in particular) together.
2. l tags x when score(x, l) ≥ sqrt((n − K) / K), n the size of that reference and
   K = MAX_PRESENT: l stands out of its alternatives at least as far as each of K labels
   present in the picture together, and equally strongly, would. One label alone on a
   picture stands out by sqrt(n − 1); two by sqrt((n − 2)/2) each.

The threshold depends only on the label set, never on the library or on any truth, so a
later run tags new and changed images exactly as the first run tagged the others; the
label set, the templates and the rule are kept (in the catalog's settings) so that a
change of any of them re-tags every image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from indexer.catalog import IMAGE, Catalog, ModelRow
from indexer.catalog_tags import FOLDERS, ItemTags, TagTarget
from indexer.decode import path_str
from indexer.errors import ClipdexError
from indexer.model_store import find_card

TextEncodeFn = Callable[[list[str]], np.ndarray]  # texts → (T, D) unit vectors

RULE = "stands-out-of-its-set/v3"
# A set this large is its own reference; a smaller one is compared with the background too. Four alternatives
# are enough for the scores to spread (one label present stands out by sqrt(3), the threshold is sqrt(1/3));
# with the background (v2: fewer than 5), four shapes had to stand out of 34 texts by 3.2 sd and clipdex-tiny's
# never did: recall 0.00 for every shape on four seeds of benchmarks/tags.py's scenes, 0.86-0.99 with v3.
CENTRE_ON_LABELS = 4
MAX_PRESENT = 3  # K: a picture may hold this many labels of one set, equally strongly, and each is still tagged
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
    sets: int = 0  # label sets (a label file's [name] sections)
    calibrated: bool = False  # a new label set (or templates, or rule) for this model: every image tagged again
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


LabelSets = Sequence[Sequence[str]]


def read_labels(text: str) -> list[str]:
    """Labels from a file's text, every set together (see read_label_sets)."""
    return list(dict.fromkeys(label for labels in read_label_sets(text) for label in labels))


def read_label_sets(text: str) -> list[list[str]]:
    """Sets of labels from a file's text: one label a line, a `[name]` line starting a new set;
    blank lines, lines starting with # and repeats within a set are left out, and so are empty sets."""
    sets: list[list[str]] = [[]]
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("[") and line.endswith("]"):
            sets.append([])
        elif line and not line.startswith("#"):
            sets[-1].append(line)
    return [list(dict.fromkeys(s)) for s in sets if s]


def as_label_sets(labels: Sequence[str] | LabelSets) -> list[list[str]]:
    """A flat list of labels is one set; a list of lists is several. Empty sets are left out."""
    if all(isinstance(label, str) for label in labels):
        return [list(dict.fromkeys(str(label) for label in labels))] if labels else []
    return [list(dict.fromkeys(s)) for s in labels if not isinstance(s, str) and len(s)]


def templates_for(model_name: str, home: Path | None) -> tuple[str, ...]:
    """The model card's `prompt_templates` (or its architecture's card's, for a saved fine-tune), else TEMPLATES."""
    seen: set[str] = set()
    name: str | None = model_name
    while name and name not in seen:
        seen.add(name)
        try:
            card = find_card(name, home)
        except ClipdexError:
            return TEMPLATES
        if card is None:
            return TEMPLATES
        templates = card.card.get("prompt_templates")
        if isinstance(templates, list) and templates and all(isinstance(t, str) and "{}" in t for t in templates):
            return tuple(templates)
        name = card.arch
    return TEMPLATES


def label_vectors(encode: TextEncodeFn, labels: Sequence[str], templates: Sequence[str] = TEMPLATES) -> np.ndarray:
    """One unit vector per label, the mean of its prompts' unit vectors: (L, D)."""
    prompts = [t.format(label) for label in labels for t in templates]
    vecs = encode(prompts).reshape(len(labels), len(templates), -1)  # (L, P, D)
    mean = vecs.mean(axis=1)  # (L, D)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def set_scores(images: np.ndarray, labels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, float]:
    """How far each label of one set stands out of its reference (the set, with the background texts for a
    set of fewer than CENTRE_ON_LABELS labels), in the reference's sd for that image: (N, L); and the threshold."""
    s = images @ labels.T  # (N, L)
    reference = s if labels.shape[0] >= CENTRE_ON_LABELS else np.concatenate([s, images @ background.T], axis=1)
    mean, sd = reference.mean(axis=1, keepdims=True), reference.std(axis=1, keepdims=True)  # (N, 1)
    return (s - mean) / np.maximum(sd, 1e-9), threshold_for(reference.shape[1])


def threshold_for(n: int) -> float:
    """The score MAX_PRESENT labels, equally present in a picture, would each reach among n: sqrt((n − K) / K)."""
    k = min(MAX_PRESENT, max(n - 1, 1))
    return float(np.sqrt((n - k) / k))


def labels_key(sets: LabelSets, templates: Sequence[str]) -> str:
    """What a model's tags depend on besides the image: changing any of it re-tags every image."""
    spec = {
        "rule": RULE, "max_present": MAX_PRESENT, "centre_on_labels": CENTRE_ON_LABELS, "sets": [list(s) for s in sets],
        "templates": list(templates), "background": BACKGROUND,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def tag_with_labels(
    catalog: Catalog, model: ModelRow, sets: LabelSets, encode: TextEncodeFn, report: TagReport,
    templates: Sequence[str] = TEMPLATES,
) -> None:  # fmt: skip
    """Tag the model's new and changed images (every image, for new label sets or templates) with `sets`."""
    key = labels_key(sets, templates)
    labels = [label for s in sets for label in s]
    report.model, report.labels, report.sets = model.name, len(set(labels)), len(sets)
    targets, report.unchanged = catalog.tag_targets(model.id, key)
    setting = f"tags.thresholds.{model.id}"
    report.calibrated = json.loads(catalog.get_setting(setting) or "{}").get("key") != key
    thresholds = [threshold_for(len(s) if len(s) >= CENTRE_ON_LABELS else len(s) + len(BACKGROUND)) for s in sets]
    report.thresholds = {label: t for s, t in zip(sets, thresholds) for label in s}
    if report.calibrated:
        catalog.set_setting(setting, json.dumps({"key": key, "thresholds": [report.thresholds[lab] for lab in labels]}))
    if not targets:
        return
    background = label_vectors(encode, BACKGROUND, ("{}",))
    vectors = [label_vectors(encode, s, templates) for s in sets]
    for start in range(0, len(targets), BATCH):
        chunk = targets[start : start + BATCH]
        ids, vecs = catalog.vectors(model.id, IMAGE, [t.id for t in chunk])
        by_id = {t.id: t for t in chunk}
        report.waiting += len(chunk) - len(ids)
        if not len(ids):
            continue
        tags: dict[int, list[tuple[str, float]]] = {int(i): [] for i in ids}
        for names, label_vecs in zip(sets, vectors):
            scores, threshold = set_scores(vecs, label_vecs, background)  # (B, L)
            for row, j in zip(*np.nonzero(scores >= threshold)):
                tags[int(ids[row])].append((names[int(j)], float(scores[row, j])))
        batch = [ItemTags(by_id[i], tuple(dict(found).items())) for i, found in tags.items()]
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
    "BACKGROUND", "MAX_PRESENT", "STARTER_LABELS", "TEMPLATES", "LabelSets", "TagReport", "as_label_sets", "label_vectors",
    "read_label_sets", "read_labels", "set_scores", "tag_folders", "tag_with_labels", "templates_for", "threshold_for",
]
