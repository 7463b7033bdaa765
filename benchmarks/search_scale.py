"""Search at scale: the index layout clipdex chooses against exact flat search, in one run.

    .venv/bin/python benchmarks/search_scale.py [--sizes 62500 100000 1000000]

Vectors: 512-d unit vectors from a mixture of 1,000 clusters on the sphere, with
the spread chosen so that the exact top-10 neighbours of a query have a mean
cosine of 0.75-0.9 (printed). Queries are held-out draws from the same mixture.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.vector_index import IndexTag, VectorIndex, choose_layout  # noqa: E402

DIM = 512
CLUSTERS = 1000
SPREAD = 0.5  # noise norm relative to the centre: neighbour cosine ≈ 1 / (1 + spread²)


def mixture(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks, to keep the peak memory down
        m = min(100_000, n - start)
        x = centres[rng.integers(0, CLUSTERS, m)] + SPREAD * rng.standard_normal((m, DIM)).astype(np.float32) / np.sqrt(DIM)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latencies(index: VectorIndex, queries: np.ndarray, k: int = 10) -> np.ndarray:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, k)
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000  # ms


def recall(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    _, got = index.search(queries, k)
    return float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got.tolist(), truth.tolist())]))


def run(n: int, queries_n: int) -> list[tuple[str, ...]]:
    data = mixture(n, seed=1)
    queries = mixture(queries_n, seed=2)  # held-out draws
    ids = np.arange(n, dtype=np.int64)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(data)
    cos, truth = exact.search(queries, 10)
    rows = []
    layout, nlist = choose_layout(n, DIM)
    tag = IndexTag("bench", "bench@0", "image", 0, DIM)
    for name in ["flat (exact baseline)"] + ([f"{layout} (chosen, {nlist} lists)"] if layout != "flat" else []):
        t0 = time.perf_counter()
        if name.startswith("flat"):
            index = VectorIndex(tag)
            index.add(ids, data)
        else:
            index = VectorIndex.build(tag, ids, data)
        build = time.perf_counter() - t0
        sample = queries[: 50 if name.startswith("flat") and n > 200_000 else 300]
        lat = latencies(index, sample)
        rows.append((
            f"{n:,}", name, f"{build:.1f} s", f"{index.memory_bytes / n:.0f} B",
            f"{index.memory_bytes / 1e9:.2f} GB", f"{np.percentile(lat, 50):.2f}", f"{np.percentile(lat, 99):.2f}",
            f"{recall(index, queries, truth):.3f}",
        ))
        del index
    print(f"  {n:,} vectors: mean cosine of the exact top-10 to their query = {cos.mean():.3f}", file=sys.stderr)
    rows.append((f"{n:,}", f"(exact top-10 mean cosine {cos.mean():.3f})", "", "", "", "", "", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[62_500, 100_000, 1_000_000])  # 62,500: the flat limit at 512-d
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    faiss.omp_set_num_threads(max(1, faiss.omp_get_max_threads()))
    rows = []
    for n in args.sizes:
        print(f"building {n:,} ...", file=sys.stderr)
        rows += run(n, args.queries)
    head = ("vectors", "index", "build", "mem/vector", "memory", "p50 ms", "p99 ms", "recall@10")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print(f"\nsearch_scale: {DIM}-d, {CLUSTERS} clusters, single-query latency, {faiss.omp_get_max_threads()} threads")
    for r in [head] + rows:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("targets at 1M: p50 <= 5 ms at recall@10 >= 0.95, memory <= 1 GB")
    print("reproduce: .venv/bin/python benchmarks/search_scale.py")


if __name__ == "__main__":
    main()
