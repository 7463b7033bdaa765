"""Pairs of vectors within a radius (inner product at least `min_similarity`), never all pairs.

Small collections are scanned exactly. Larger ones go through an inverted file whose cells
are centred on a sample of the vectors themselves and found with an HNSW graph, so each
vector is compared with the few hundred others in its nearest cells: n log n work overall
(k-means and a flat coarse quantizer would make it n^1.5 or worse). A pair of near-copies
(similarity 0.9 and up) almost always shares a cell or a neighbouring one; the benchmark
(benchmarks/duplicates.py) measures the recall against the exact scan.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

EXACT_MAX = 8_000  # up to this many vectors the exact scan is cheap (8k x 8k dot products)
CELL_SIZE = 64  # vectors per inverted-file cell, on average
PROBE_CELLS = 12  # cells each vector is compared within


def pairs_within(vectors: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) for every pair of rows i < j of (N, D) unit vectors whose inner product
    is at least `min_similarity`; i and j index the rows. Exact up to EXACT_MAX rows, then
    approximate (a pair whose vectors fall in cells that are far apart can be missed)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
    n, dim = x.shape
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    index = _exact(x) if n <= EXACT_MAX else _cells(x)
    # range_search keeps scores strictly above the radius: nudge it so `>=` holds.
    lims, scores, found = index.range_search(x, float(np.nextafter(np.float32(min_similarity), np.float32(-1))))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims.astype(np.int64)))
    keep = rows < found  # each pair once, and no vector paired with itself
    return rows[keep], found[keep].astype(np.int64), scores[keep]


def _exact(x: np.ndarray) -> Any:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def _cells(x: np.ndarray) -> Any:
    n, dim = x.shape
    nlist = max(1, n // CELL_SIZE)
    rng = np.random.default_rng(0)
    centres = x[np.sort(rng.choice(n, nlist, replace=False))]  # (nlist, D)
    quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    quantizer.hnsw.efConstruction = 40
    quantizer.hnsw.efSearch = 4 * PROBE_CELLS
    quantizer.add(centres)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True  # the cells are the sampled vectors: no k-means
    index.add(x)
    index.nprobe = PROBE_CELLS
    return index
