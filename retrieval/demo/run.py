"""`clipdex demo`: a photo world made on the spot, indexed and searched with the built-in model.

Runs offline: the pictures come from the synthetic world (scenes the built-in
model never saw in training), the model is the shipped `clipdex-tiny`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from retrieval.demo import world
from retrieval.library import Library
from indexer.models import TINY_MODEL, ModelSpec
from retrieval.search import ImageResult, Result, TextResult

DEMO_SEED = 4242
KS = (1, 5, 10)


@dataclass(frozen=True)
class DemoQuery:
    kind: str  # "text", "image" or "text-by-image"
    query: str
    results: list[tuple[str, float]]  # (file name or caption, score)
    expected: str  # the file (or caption) that answers the query


@dataclass
class DemoReport:
    library: str
    photos: str
    images: int
    index_seconds: float
    queries: list[DemoQuery] = field(default_factory=list)
    recall: dict[int, float] = field(default_factory=dict)  # text→image recall@K over every caption
    captions: int = 0


def run_demo(home: Path | None = None, images: int = 200, note: Callable[[str], None] | None = None) -> DemoReport:
    """Write `images` pictures, index them with clipdex-tiny, run example queries and measure recall.

    With `home`, the library (and its demo-photos folder) stays there; otherwise a temporary one is removed.
    """
    tmp = None if home is not None else Path(tempfile.mkdtemp(prefix="clipdex-demo-"))
    root = home if home is not None else tmp
    assert root is not None
    try:
        return _run(root, images, note or (lambda _: None))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(root: Path, images: int, note: Callable[[str], None]) -> DemoReport:
    scenes = world.make_scenes(images, DEMO_SEED, split="test")
    photos = root / "demo-photos"
    note(f"drawing {images} pictures in {photos}")
    csv_path = world.write_world(photos, scenes)
    tiny = ModelSpec.parse(TINY_MODEL)
    with Library.open(root) as lib:
        note(f"indexing them with the built-in model {TINY_MODEL}")
        started = time.monotonic()
        lib.index([photos], model=tiny)
        report = DemoReport(str(root), str(photos), images, time.monotonic() - started)
        files = [f"scene{i:05d}.png" for i in range(images)]
        for i in (0, 1, 2):
            hits = lib.search(scenes[i].captions[0], top=3, model=tiny, force_image=False)
            report.queries.append(DemoQuery("text", scenes[i].captions[0], _labels(hits), files[i]))
        hits = lib.search(str(photos / files[3]), top=3, model=tiny, force_image=True)
        report.queries.append(DemoQuery("image", files[3], _labels(hits), files[3]))
        lib.add_texts(sorted({c for s in scenes for c in s.captions}), model=tiny)
        hits = lib.search(str(photos / files[4]), top=3, model=tiny, texts=True, force_image=True)
        report.queries.append(DemoQuery("text-by-image", files[4], _labels(hits), scenes[4].captions[0]))
        report.recall, report.captions = _recall(lib, tiny, scenes, files)
        report.photos = str(csv_path.parent)
    return report


def _labels(results: list[Result]) -> list[tuple[str, float]]:
    out = []
    for r in results:
        if isinstance(r, ImageResult):
            out.append((Path(r.path).name, r.score))
        elif isinstance(r, TextResult):
            out.append((r.text, r.score))
    return out


def _recall(lib: Library, model: ModelSpec, scenes: list[world.Scene], files: list[str]) -> tuple[dict[int, float], int]:
    """Text→image recall@K through `Library.search`, one query per distinct caption."""
    answers: dict[str, set[str]] = {}
    for scene, file in zip(scenes, files):
        for caption in scene.captions:
            answers.setdefault(caption, set()).add(file)
    found = {k: 0 for k in KS}
    for caption, wanted in answers.items():
        names = [label for label, _ in _labels(lib.search(caption, top=max(KS), model=model))]
        rank = next((n for n, name in enumerate(names, start=1) if name in wanted), None)
        for k in KS:
            found[k] += rank is not None and rank <= k
    return {k: found[k] / len(answers) for k in KS}, len(answers)
