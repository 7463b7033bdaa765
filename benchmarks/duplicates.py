"""clipdex duplicates: precision and recall per tier on a generated truth set, and time to group at scale.

    .venv/bin/python benchmarks/duplicates.py [--scenes 12] [--sizes 25000 50000 100000]

Part 1 writes tests/duplicate_sets.py's set (16 files a scene: copies, a same-pixels PNG,
re-encodes at quality 85/60/35, resizes to 1/2 and 1/4, a 5% crop, an EXIF-stripped re-save,
three burst shots 1 s apart, two shots of the scene a day later, a lookalike), indexes it with
the built-in tiny model, and scores every pair: a pair's predicted tier is the looser of its
two members' links to their group's keeper; its true tier comes from the set's truth. It then
compares perceptual hashes for the near tier: clipdex's pHash, a dHash, and imagehash's pHash
(when installed), at three thresholds.

Part 2 imports N synthetic vectors (the tiny model's 128 dimensions; clusters with 5% planted
near-copies) and times `Library.duplicates` end to end (catalog read, radius pairs, grouping),
interleaved with the exact all-pairs radius search (flat FAISS range search) as the baseline,
then fits the growth exponent. The files of imported vectors do not exist, so no perceptual
hash or pixel digest is read at this scale: part 1 times those per file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("CLIPDEX_NO_EXPORT", "1")

from duplicate_sets import Truth, write_set  # noqa: E402
from indexer import neighbours  # noqa: E402
from indexer.image_hashes import difference_hash, perceptual_hash  # noqa: E402
from indexer.model_spec import ModelSpec  # noqa: E402
from retrieval.duplicates import TIERS, DuplicateConfig, DuplicateReport  # noqa: E402
from retrieval.library import Library  # noqa: E402
from cpu_info import cpu  # noqa: E402

TINY = ModelSpec.parse("clipdex-tiny")
TARGETS = {"exact": (1.0, 1.0), "near": (0.98, 0.95), "burst": (0.9, 0.9)}
EXACT_SET = {"original", "exact"}




# -- part 1: quality ------------------------------------------------------------------------


def true_tier(truth: Truth, a: str, b: str) -> str | None:
    (sa, shot_a), (sb, shot_b) = truth.shots[a], truth.shots[b]
    if sa != sb:
        return None  # other scenes, lookalikes, and the same scene on another day
    if shot_a != shot_b:
        return "burst"
    both_exact = shot_a == 0 and truth.tier[a] in EXACT_SET and truth.tier[b] in EXACT_SET
    return "exact" if both_exact else "near"


def predicted(report: DuplicateReport) -> dict[tuple[str, str], str]:
    out = {}
    rank = {"keeper": 0, "exact": 0, "near": 1, "burst": 2}
    for g in report.groups:
        for m, n in combinations(g.members, 2):
            key = tuple(sorted((Path(m.path).name, Path(n.path).name)))
            out[key] = TIERS[max(rank[m.match], rank[n.match])]
    return out  # type: ignore[return-value]


def scores(truth: Truth, report: DuplicateReport) -> dict[str, tuple[float, float, int, int]]:
    names = sorted(truth.shots)
    want = {(a, b): t for a, b in combinations(names, 2) if (t := true_tier(truth, a, b)) is not None}
    got = predicted(report)
    out = {}
    for tier in TIERS:
        p = {k for k, t in got.items() if t == tier}
        w = {k for k, t in want.items() if t == tier}
        out[tier] = (len(p & w) / len(p) if p else 1.0, len(p & w) / len(w) if w else 1.0, len(p), len(w))
    return out


def cross_day(truth: Truth, report: DuplicateReport) -> int:
    return sum(
        1 for (a, b) in predicted(report)
        if abs(truth.shots[a][0]) == abs(truth.shots[b][0]) and truth.shots[a][0] != truth.shots[b][0]
    )


def imagehash_phash() -> object | None:
    try:
        import imagehash
        from PIL import Image, ImageOps
    except ImportError:
        return None

    def phash(path: bytes) -> int | None:
        try:
            with Image.open(path) as img:
                return int(str(imagehash.phash(ImageOps.exif_transpose(img))), 16)
        except OSError:
            return None

    return phash


def quality(scenes: int) -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        truth = write_set(Path(tmp) / "photos", scenes)
        files = sorted((Path(tmp) / "photos").iterdir())
        with Library.open(Path(tmp) / "library") as lib:
            t0 = time.perf_counter()
            lib.index([Path(tmp) / "photos"], model=TINY)
            index_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = lib.duplicates()
            group_s = time.perf_counter() - t0
            print(f"\n## Quality: {scenes} scenes, {len(files)} files (indexed in {index_s:.1f} s, grouped in {group_s:.2f} s)")
            print(f"{'tier':6s} {'precision':>9s} {'recall':>7s} {'pairs found':>11s} {'true pairs':>10s}  target (P/R)  verdict")
            for tier, (p, r, found, true) in scores(truth, report).items():
                tp, tr = TARGETS[tier]
                verdict = "PASS" if p >= tp and r >= tr else "FAIL"
                ok &= verdict == "PASS"
                print(f"{tier:6s} {p:9.3f} {r:7.3f} {found:11d} {true:10d}  {tp:.2f}/{tr:.2f}     {verdict}")
            merges = cross_day(truth, report)
            ok &= merges == 0
            print(f"cross-day merges: {merges} (target 0) {'PASS' if merges == 0 else 'FAIL'}")
            hashers = {"clipdex pHash": perceptual_hash, "clipdex dHash": difference_hash}
            ih = imagehash_phash()
            if ih is not None:
                hashers["imagehash.phash"] = ih  # type: ignore[assignment]
            print("\nNear tier by perceptual hash and threshold (bits of 64), same candidates and rules:")
            print(f"{'hash':16s} {'ms/file':>7s}  " + "  ".join(f"{'<=' + str(b) + ' P/R':>13s}" for b in (6, 10, 14)))
            for name, fn in hashers.items():
                t0 = time.perf_counter()
                for f in files:
                    fn(os.fsencode(f))
                per_file = (time.perf_counter() - t0) / len(files) * 1000
                cells = []
                for bits in (6, 10, 14):
                    rep = lib.duplicates(DuplicateConfig(near_max_bits=bits, exact_max_bits=min(4, bits)), hash_fn=fn)
                    p, r, _, _ = scores(truth, rep)["near"]
                    cells.append(f"{p:.3f}/{r:.3f}")
                print(f"{name:16s} {per_file:7.2f}  " + "  ".join(f"{c:>13s}" for c in cells))
            if ih is None:
                print("(imagehash is not installed: pip install imagehash to compare it)")
    return ok


# -- part 2: scale ----------------------------------------------------------------------------


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (neighbours at cosine ~0.8), 5% of them near-copies (~0.98) of others."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n_copies = n // 20
    base = centres[rng.integers(0, len(centres), n - n_copies)]
    base = base + 0.5 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(dim)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = base[rng.integers(0, len(base), n_copies)]
    copies = src + 0.15 * rng.standard_normal(src.shape).astype(np.float32) / np.sqrt(dim)
    x = np.vstack([base, copies])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def flat_pairs(x: np.ndarray, radius: float) -> int:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, _ = index.range_search(x, radius)
    return int(lims[-1])


def scale(sizes: list[int], reps: int) -> None:
    print("\n## Time to group N imported vectors (Library.duplicates end to end; 128-d, tiny model)")
    print(f"{'N':>7s} {'clipdex s':>9s} {'all-pairs s':>11s} {'ratio':>6s} {'pairs':>7s} {'recall vs all-pairs':>19s}")
    times = []
    radius = DuplicateConfig().burst_similarity
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            x = synthetic(n, 128, seed=n)
            paths = [f"{tmp}/imported/{k:07d}.jpg" for k in range(n)]
            with Library.open(Path(tmp) / f"lib{n}") as lib:
                lib.import_embeddings(paths, x, model=TINY)
                ours, base = [], []
                for rep in range(reps):  # interleaved: A B A B
                    lib._duplicates.clear()  # noqa: SLF001 - time a cold grouping each time
                    t0 = time.perf_counter()
                    lib.duplicates()
                    ours.append(time.perf_counter() - t0)
                    if n <= 50_000 or rep == 0:
                        t0 = time.perf_counter()
                        total = flat_pairs(x, radius)
                        base.append(time.perf_counter() - t0)
            found = len(neighbours.pairs_within(x, radius)[0])
            exact_pairs = (total - n) // 2  # range search returns each pair twice and every vector itself
            t_ours, t_base = statistics.median(ours), statistics.median(base)
            times.append(t_ours)
            print(f"{n:7d} {t_ours:9.2f} {t_base:11.2f} {t_ours / t_base:6.2f} {found:7d} {found / max(1, exact_pairs):19.3f}")
    slope = float(np.polyfit(np.log(sizes), np.log(times), 1)[0])
    nlogn = float(np.polyfit(np.log(sizes), np.log([s * np.log(s) for s in sizes]), 1)[0])
    print(f"fitted exponent: time ~ N^{slope:.2f} (N log N over these sizes is N^{nlogn:.2f}; all pairs N^2)")
    verdict = "PASS" if times[-1] <= 120 and slope <= nlogn + 0.1 else "FAIL"
    print(f"target: <= 120 s at {sizes[-1]} and growth <= N log N: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    print(f"# benchmarks/duplicates.py on {cpu()}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print(f"command: python benchmarks/duplicates.py --scenes {args.scenes} --sizes {' '.join(map(str, args.sizes))} --reps {args.reps}")
    quality(args.scenes)
    scale(args.sizes, args.reps)


if __name__ == "__main__":
    main()
