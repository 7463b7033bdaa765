"""Pairs of vectors within a radius (inner product at least `min_similarity`), never all pairs.

Small collections are scanned exactly (a FAISS flat range search). Larger ones go through a
forest of random-projection trees: each tree splits the vectors in halves along the line
between two of them, again and again, until a leaf holds about LEAF vectors, and only vectors
that share a leaf are compared (one batched matrix product per leaf). A pair of near-copies
(cosine 0.9 and up) falls in the same leaf of most trees, so TREES trees miss almost none;
the work is TREES x (n log n splits + n x LEAF dot products): n log n overall. An inverted
file with an HNSW coarse quantizer was measured first and grew as n^1.6 at 25k-100k vectors
(the graph search over n/64 cells cost more per query as the cells multiplied).
benchmarks/duplicates.py measures the recall against the exact scan.
"""

from __future__ import annotations

import faiss
import numpy as np

EXACT_MAX = 8_000  # up to this many vectors the exact scan is cheap (8k x 8k dot products)
TREES = 8  # random-projection trees; a pair missed by every tree is lost
LEAF = 128  # vectors per leaf, at most
_CHUNK = 4096  # rows projected at a time
_LEAVES_PER_BATCH = 64  # leaves compared per matrix product: bounds the temporaries to ~LEAF^2 x 64 floats


def pairs_within(vectors: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) for every pair of rows i < j of (N, D) unit vectors whose inner product
    is at least `min_similarity`; i and j index the rows, sorted by (i, j). Exact up to EXACT_MAX
    rows, then approximate: a pair that no tree puts in one leaf is missed (never a false pair)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
    n = len(x)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    if n <= EXACT_MAX:
        i, j = _exact(x, min_similarity)
    else:
        found = [_leaf_pairs(x, _tree_order(x, np.random.default_rng(seed)), min_similarity) for seed in range(TREES)]
        keys = np.unique(np.concatenate(found))
        i, j = keys // n, keys % n
    sims = np.einsum("ij,ij->i", x[i], x[j])
    return i, j, sims


def _exact(x: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # range_search keeps scores strictly above the radius: nudge it so `>=` holds.
    radius = float(np.nextafter(np.float32(min_similarity), np.float32(-1)))
    lims, _, found = index.range_search(x, radius)
    counts: np.ndarray = np.diff(lims.astype(np.int64))
    rows = np.repeat(np.arange(len(x), dtype=np.int64), counts)
    found = found.astype(np.int64)
    keep = rows < found  # each pair once, and no vector paired with itself
    keys = np.unique(rows[keep] * len(x) + found[keep])
    return keys // len(x), keys % len(x)


def _tree_order(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of the rows in which every leaf of one random-projection tree is contiguous:
    node k of level l holds positions [k*n // 2^l, (k+1)*n // 2^l)."""
    n = len(x)
    levels = max(0, int(np.ceil(np.log2(n / LEAF))))
    order = np.arange(n)
    for level in range(levels):
        nodes = 1 << level
        bounds = (np.arange(nodes + 1, dtype=np.int64) * n) // nodes
        sizes = np.diff(bounds).astype(np.int64)
        node_of = np.repeat(np.arange(nodes), sizes)  # (N,) node of each position
        # Each node splits along the line between two of its vectors (as Annoy does), at the median.
        a = order[bounds[:-1] + (rng.random(nodes) * sizes).astype(np.int64)]
        b = order[bounds[:-1] + (rng.random(nodes) * sizes).astype(np.int64)]
        planes = x[a] - x[b]  # (nodes, D)
        proj = np.empty(n, dtype=np.float32)
        for s in range(0, n, _CHUNK):  # in chunks that stay in cache: whole (N, D) gathers were memory-bound
            proj[s : s + _CHUNK] = np.einsum("ij,ij->i", x[order[s : s + _CHUNK]], planes[node_of[s : s + _CHUNK]])
        order = order[np.lexsort((proj, node_of))]
    return order


def _leaf_pairs(x: np.ndarray, order: np.ndarray, min_similarity: float) -> np.ndarray:
    """Keys i * N + j (i < j) of the pairs within each leaf of `order` at least `min_similarity` apart."""
    n = len(x)
    leaves = 1 << max(0, int(np.ceil(np.log2(n / LEAF))))
    bounds = (np.arange(leaves + 1, dtype=np.int64) * n) // leaves
    width = int(np.diff(bounds).max())
    out = []
    for start in range(0, leaves, _LEAVES_PER_BATCH):
        first = bounds[start : min(start + _LEAVES_PER_BATCH, leaves)]
        slots = first[:, None] + np.arange(width)[None, :]  # (L, W) positions in `order`
        valid = slots < bounds[start + 1 : start + 1 + len(first)][:, None]
        rows = np.where(valid, order[np.minimum(slots, n - 1)], -1)  # (L, W) row ids, -1 past the leaf's end
        block = np.where(valid[..., None], x[np.maximum(rows, 0)], 0.0).astype(np.float32)  # (L, W, D)
        # einsum, not a stacked matmul: BLAS threads on a busy 2-core machine took 20x longer.
        sims = np.einsum("lid,ljd->lij", block, block)  # (L, W, W)
        leaf, p, q = np.nonzero(np.triu(sims >= min_similarity, 1) & valid[:, :, None] & valid[:, None, :])
        i, j = rows[leaf, p], rows[leaf, q]
        out.append(np.minimum(i, j) * n + np.maximum(i, j))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
