"""Tag quality: per-label precision and recall of `clipdex tag` on the synthetic world, at the calibrated thresholds.

    PYTHONPATH=. python benchmarks/tags.py [--images 300] [--seed 9090]

Writes `--images` scenes of the world clipdex-tiny was trained on (retrieval/demo/world.py,
the "test" stream: shape–colour pairs it saw, pictures it did not), indexes them with
clipdex-tiny, and runs `Library.tag` with a fixed label list of the world's six colours
and four shapes. A picture holds a label when one of its shapes has that colour or shape.
For each label it prints precision and recall at the threshold calibrated by
retrieval/tagging.py (no ground truth used), and the best recall any threshold reaches
at precision ≥ 0.9 on the same scores (an upper bound that shows what the model can
tell apart, whatever the calibration). Targets (issue 15): precision ≥ 0.9, recall ≥ 0.8.

Negative control: the same tags scored against the truth of other pictures (a fixed
permutation); its precision must fall to about each label's base rate, far below 0.9.
A second control adds two labels no picture holds (the NEW domain's "hexagon" and
"star") to the list and counts the pictures the same rule tags with them (should be ~0).
Then it adds 30 pictures, indexes again and re-tags: only the 30 new ones may be tagged.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.filters import SearchFilter  # noqa: E402
from indexer.models import TINY_MODEL, ModelSpec  # noqa: E402
from retrieval import tagging  # noqa: E402
from retrieval.demo import world  # noqa: E402
from retrieval.library import Library  # noqa: E402

LABELS = [*world.COLOURS, *world.BASE.shapes]
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


def cpu() -> str:
    name = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), name)
        flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
        shown = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    except OSError:
        shown = ""
    return f"{name}, {os.cpu_count()} CPUs, flags: {shown or 'none of avx2/avx512'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=9090)
    args = parser.parse_args()
    scenes = world.make_scenes(args.images + 30, args.seed, world.BASE, split="test")
    first, extra = scenes[: args.images], scenes[args.images :]
    with tempfile.TemporaryDirectory(prefix="clipdex-tags-") as tmp:
        photos = Path(tmp) / "photos"
        world.write_world(photos, first)
        with Library.open(Path(tmp) / "lib") as lib:
            started = time.perf_counter()
            lib.index([photos], model=ModelSpec.parse(TINY_MODEL))
            index_s = time.perf_counter() - started
            started = time.perf_counter()
            report = lib.tag(LABELS)
            tag_s = time.perf_counter() - started
            files = {Path(lib.item(i).path or "").name: i for i in lib.catalog.filter_ids("image", SearchFilter()).tolist()}  # type: ignore[union-attr]
            ids = [files[f"scene{n:05d}.png"] for n in range(len(first))]
            got = np.zeros((len(first), len(LABELS)), dtype=bool)
            tags = lib.catalog.tags_of(ids)
            for n, i in enumerate(ids):
                for lab in tags.get(i, []):
                    got[n, LABELS.index(lab)] = True
            scores = _scores(lib, ids, LABELS)
            with_absent = _scores(lib, ids, [*LABELS, *ABSENT])
            every = _scores(lib, None, [*LABELS, *ABSENT], background=True)
            absent = (with_absent > tagging.calibrate(*every))[:, len(LABELS):].sum(axis=0)
            # re-tagging after adding photos
            world.write_world(photos, scenes, name="captions-all.csv")  # the first ones unchanged, 30 new
            lib.index()
            again = lib.tag(LABELS)
    truth = truth_of(first)
    control = truth[np.random.default_rng(1).permutation(len(first))]
    print(f"clipdex tag on {args.images} world scenes (seed {args.seed}), clipdex-tiny; {cpu()}")
    print(f"index {index_s:.1f} s, tag {tag_s:.2f} s; alpha {tagging.ALPHA}, floor quantile {tagging.FLOOR_QUANTILE}; targets: precision >= {TARGET_P}, recall >= {TARGET_R}")
    print()
    print("| label | pictures | threshold | tagged | precision | recall | target met | best recall at P>=0.9 | control precision |")
    print("|---|---|---|---|---|---|---|---|---|")
    met = 0
    for j, lab in enumerate(LABELS):
        tp = int((got[:, j] & truth[:, j]).sum())
        p = tp / max(int(got[:, j].sum()), 1)
        r = tp / max(int(truth[:, j].sum()), 1)
        cp = int((got[:, j] & control[:, j]).sum()) / max(int(got[:, j].sum()), 1)
        ok = p >= TARGET_P and r >= TARGET_R
        met += ok
        print(f"| {lab} | {int(truth[:, j].sum())} | {report.thresholds[lab]:.4f} | {int(got[:, j].sum())} | {p:.2f} | {r:.2f} "
              f"| {'yes' if ok else 'no'} | {best_recall(scores[:, j], truth[:, j]):.2f} | {cp:.2f} |")
    tp = int((got & truth).sum())
    print(f"| all (micro) | {int(truth.sum())} | | {int(got.sum())} | {tp / max(int(got.sum()), 1):.2f} | {tp / int(truth.sum()):.2f} "
          f"| | | {int((got & control).sum()) / max(int(got.sum()), 1):.2f} |")
    print()
    print(f"labels meeting both targets: {met} of {len(LABELS)}")
    print(f"absent-label control: pictures tagged {ABSENT[0]} {absent[0]}, {ABSENT[1]} {absent[1]} of {len(first)} (no picture holds them)")
    print(f"re-tag after adding {len(extra)} pictures: tagged {again.tagged}, unchanged {again.unchanged}, "
          f"calibrated again: {again.calibrated} (expected: {len(extra)}, {args.images}, False)")
    return 0


def _scores(lib: Library, ids: list[int] | None, names: list[str], background: bool = False) -> Any:
    """The rule's scores (N, L) of `names` for the pictures `ids` (None: every picture, in id order),
    with the background's scores too when `background`."""
    row = lib.active_model()
    assert row is not None
    encoder = lib.encoder(ModelSpec.parse(TINY_MODEL))
    from indexer.encode import encode_texts

    def encode(texts: list[str]) -> np.ndarray:
        return encode_texts(encoder, texts)

    got_ids, vecs = lib.catalog.vectors(row.id, "image", ids)
    if ids is not None:
        order = {int(i): n for n, i in enumerate(got_ids)}
        vecs = vecs[[order[i] for i in ids]]
    labels = tagging.label_vectors(encode, names)
    both = tagging.relative_scores(vecs, labels, tagging.label_vectors(encode, tagging.BACKGROUND, ("{}",)))
    return both if background else both[0]


if __name__ == "__main__":
    sys.exit(main())
