"""Tag quality: per-label precision and recall of `clipdex tag` on the synthetic world, at the rule's thresholds.

    PYTHONPATH=. python benchmarks/tags.py [--images 300] [--seed 9090]

Writes `--images` scenes of the world clipdex-tiny was trained on (retrieval/demo/world.py,
the "test" stream: shape–colour pairs it saw, pictures it did not), indexes them with
clipdex-tiny, and runs `Library.tag` with a fixed label list in two sets of alternatives:
the world's six colours and its four shapes. A picture holds a label when one of its
shapes has that colour or shape. For each label it prints precision and recall at the
rule's threshold (retrieval/tagging.py; no ground truth used), and the best recall any
threshold reaches at precision >= 0.9 on the same scores (what the scores can tell
apart, whatever the threshold). Targets (issue 15): precision >= 0.9, recall >= 0.8.

Is a miss the model's or the prompts' and rule's? Two more columns answer it:
- "old rule": the best recall of the previous rule's scores (CLIP's generic templates,
  each image's cosines less its mean over all ten labels);
- "probe": the best recall of a supervised linear probe (ridge regression on the image
  vectors of `--images` scenes of another seed, trained WITH their truth): what the
  image vectors hold at all. No zero-shot rule reads more than the image vector, and
  every rule here is linear in it, so a label the probe cannot find, no prompt can.

Controls: the same tags scored against the truth of other pictures (a fixed permutation:
precision must fall to about each label's base rate); two labels no picture holds (the
NEW domain's "hexagon" and "star"), added to the shapes set, and as a set of their own,
with the pictures the rule tags with them counted. Then it adds 30 pictures, indexes again
and re-tags: only the 30 new ones may be tagged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_info import cpu  # noqa: E402
from indexer.filters import SearchFilter  # noqa: E402
from indexer.models import TINY_MODEL, ModelSpec  # noqa: E402
from retrieval import tagging  # noqa: E402
from retrieval.demo import world  # noqa: E402
from retrieval.library import Library  # noqa: E402

COLOURS, SHAPES = list(world.COLOURS), list(world.BASE.shapes)
SETS = [COLOURS, SHAPES]
LABELS = [*COLOURS, *SHAPES]
ABSENT = ["hexagon", "star"]
TARGET_P, TARGET_R = 0.9, 0.8


def truth_of(scenes: list[world.Scene]) -> np.ndarray:
    """(N, L) bool: picture n holds label l."""
    return np.array([[any(lab in (t.colour, t.shape) for t in s.things) for lab in LABELS] for s in scenes])


def best_recall(scores: np.ndarray, truth: np.ndarray, precision: float = TARGET_P) -> float:
    order = np.argsort(-scores)
    hits = np.cumsum(truth[order])
    p, r = hits / np.arange(1, len(order) + 1), hits / max(truth.sum(), 1)
    return float(r[p >= precision].max()) if (p >= precision).any() else 0.0


def index_world(home: Path, photos: Path, scenes: list[world.Scene]) -> tuple[Library, np.ndarray, float]:
    """A library of the scenes, and their vectors in scene order: (library, (N, D), seconds to index)."""
    world.write_world(photos, scenes)
    lib = Library.open(home)
    started = time.perf_counter()
    lib.index([photos], model=ModelSpec.parse(TINY_MODEL))
    seconds = time.perf_counter() - started
    return lib, vectors_of(lib, len(scenes)), seconds


def scene_ids(lib: Library, count: int) -> list[int]:
    every = lib.catalog.filter_ids("image", SearchFilter()).tolist()
    files = {Path(row.path or "").name: i for i, row in lib.catalog.items(every).items()}
    return [files[f"scene{n:05d}.png"] for n in range(count)]


def vectors_of(lib: Library, count: int) -> np.ndarray:
    row = lib.active_model()
    assert row is not None
    ids = scene_ids(lib, count)
    got, vecs = lib.catalog.vectors(row.id, "image", ids)
    order = {int(i): n for n, i in enumerate(got)}
    return vecs[[order[i] for i in ids]]  # (N, D)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=9090)
    args = parser.parse_args()
    scenes = world.make_scenes(args.images + 30, args.seed, world.BASE, split="test")
    first, extra = scenes[: args.images], scenes[args.images :]
    probe_scenes = world.make_scenes(args.images, args.seed + 1, world.BASE, split="test")
    with tempfile.TemporaryDirectory(prefix="clipdex-tags-") as tmp:
        probe_lib, probe_vecs, _ = index_world(Path(tmp) / "probe-lib", Path(tmp) / "probe-photos", probe_scenes)
        probe_lib.close()
        lib, vecs, index_s = index_world(Path(tmp) / "lib", Path(tmp) / "photos", first)
        with lib:
            started = time.perf_counter()
            report = lib.tag(SETS)
            tag_s = time.perf_counter() - started
            ids = scene_ids(lib, len(first))
            tags = lib.catalog.tags_of(ids)
            got = np.array([[lab in tags.get(i, []) for lab in LABELS] for i in ids])
            encode = text_encoder(lib)
            templates = tagging.templates_for(TINY_MODEL, lib.home)
            scores, absent = rule_scores(vecs, encode, templates)
            old = old_rule_scores(vecs, encode)
            world.write_world(Path(tmp) / "photos", scenes, name="captions-all.csv")  # the first ones unchanged, 30 new
            lib.index()
            again = lib.tag(SETS)
    truth = truth_of(first)
    probe = probe_scores(probe_vecs, truth_of(probe_scenes), vecs)
    control = truth[np.random.default_rng(1).permutation(len(first))]
    print(f"clipdex tag on {args.images} world scenes (seed {args.seed}), clipdex-tiny; {cpu()}")
    print(f"index {index_s:.1f} s, tag {tag_s:.2f} s; rule {tagging.RULE}, K = {tagging.MAX_PRESENT}; "
          f"templates: {len(templates)} from the model card ({templates[0]!r}, ...)")
    print(f"targets: precision >= {TARGET_P}, recall >= {TARGET_R}")
    print()
    print("| label | pictures | threshold | tagged | precision | recall | target met | best recall at P>=0.9 "
          "| old rule | probe | control precision |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    met = 0
    for j, lab in enumerate(LABELS):
        tp = int((got[:, j] & truth[:, j]).sum())
        p = tp / max(int(got[:, j].sum()), 1)
        r = tp / max(int(truth[:, j].sum()), 1)
        cp = int((got[:, j] & control[:, j]).sum()) / max(int(got[:, j].sum()), 1)
        ok = p >= TARGET_P and r >= TARGET_R
        met += ok
        print(f"| {lab} | {int(truth[:, j].sum())} | {report.thresholds[lab]:.3f} | {int(got[:, j].sum())} | {p:.2f} | {r:.2f} "
              f"| {'yes' if ok else 'no'} | {best_recall(scores[:, j], truth[:, j]):.2f} "
              f"| {best_recall(old[:, j], truth[:, j]):.2f} | {best_recall(probe[:, j], truth[:, j]):.2f} | {cp:.2f} |")
    for name, cols in (("colours (micro)", slice(0, len(COLOURS))), ("shapes (micro)", slice(len(COLOURS), None)), ("all (micro)", slice(None))):
        g, t, c = got[:, cols], truth[:, cols], control[:, cols]
        tp = int((g & t).sum())
        print(f"| {name} | {int(t.sum())} | | {int(g.sum())} | {tp / max(int(g.sum()), 1):.2f} | {tp / int(t.sum()):.2f} "
              f"| | | | | {int((g & c).sum()) / max(int(g.sum()), 1):.2f} |")
    print()
    print(f"labels meeting both targets: {met} of {len(LABELS)}")
    print(f"absent-label control, pictures tagged (no picture holds them), of {len(first)}: in the shapes set "
          f"{ABSENT[0]} {absent[0][0]}, {ABSENT[1]} {absent[0][1]}; as a set of their own {ABSENT[0]} {absent[1][0]}, "
          f"{ABSENT[1]} {absent[1][1]}")
    print(f"re-tag after adding {len(extra)} pictures: tagged {again.tagged}, unchanged {again.unchanged}, "
          f"new label sets: {again.calibrated} (expected: {len(extra)}, {args.images}, False)")
    return 0


def text_encoder(lib: Library) -> tagging.TextEncodeFn:
    from indexer.encode import encode_texts

    encoder = lib.encoder(ModelSpec.parse(TINY_MODEL))
    return lambda texts: encode_texts(encoder, texts)


def rule_scores(vecs: np.ndarray, encode: tagging.TextEncodeFn, templates: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The rule's scores (N, L) of LABELS, and the absent labels' tag counts: [in the shapes set, as their own set]."""
    background = tagging.label_vectors(encode, tagging.BACKGROUND, ("{}",))

    def scored(names: list[str]) -> tuple[np.ndarray, float]:
        return tagging.set_scores(vecs, tagging.label_vectors(encode, names, templates), background)

    scores = np.concatenate([scored(s)[0] for s in SETS], axis=1)
    with_absent, t = scored([*SHAPES, *ABSENT])
    alone, t_alone = scored(ABSENT)
    return scores, [(with_absent[:, len(SHAPES):] >= t).sum(axis=0), (alone >= t_alone).sum(axis=0)]


def old_rule_scores(vecs: np.ndarray, encode: tagging.TextEncodeFn) -> np.ndarray:
    """The previous rule's scores: CLIP's generic templates, cosines less the image's mean over all labels: (N, L)."""
    s = vecs @ tagging.label_vectors(encode, LABELS, tagging.TEMPLATES).T
    return s - s.mean(axis=1, keepdims=True)


def probe_scores(train: np.ndarray, truth: np.ndarray, test: np.ndarray, ridge: float = 0.1) -> np.ndarray:
    """A supervised ridge-regression probe per label, fitted on (train, truth), applied to test: (N, L)."""
    x = np.c_[train, np.ones(len(train))]  # (M, D + 1)
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (truth * 2.0 - 1.0))  # (D + 1, L)
    return np.c_[test, np.ones(len(test))] @ w


if __name__ == "__main__":
    sys.exit(main())
