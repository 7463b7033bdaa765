"""The FAISS vector index: derived data, rebuilt or caught up from the catalog at any time.

This module owns the index files. A file holds one collection (images or texts) of
one model, tagged with the catalog it came from and the last change-log seq it
reflects. Files are written to a temporary name, fsynced, renamed into place and
the directory fsynced, so a crash leaves either the old file or the new one, and a
checksum catches a truncated or damaged file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer import failpoints
from indexer.atomic_files import fsync_dir, is_disk_full, remove_stale_temps, temp_path
from indexer.errors import DiskFull

MAGIC = b"CLIPDEX-FAISS\x00\x01\n"
_LEN = struct.Struct("<Q")


# Exact search stays while it is fast: up to this many vector components (N x D)
# a flat scan answers in a few ms on 2 cores (benchmarks/search_scale.py measures it).
FLAT_MAX_COMPONENTS = 32_000_000  # 62.5k vectors at 512-d, 250k at 128-d
RETRAIN_GROWTH = 4  # an IVF index is retrained once it holds 4x what it was trained on
_TRAIN_POINTS_PER_LIST = 40


@dataclass(frozen=True)
class IndexTag:
    """Which catalog state an index file reflects, and how it is laid out."""

    catalog_id: str
    model: str  # model fingerprint
    kind: str  # image | text
    seq: int  # last change-log seq applied
    dim: int
    layout: str = "flat"  # flat | ivf-sq8
    nlist: int = 0  # IVF lists
    trained_on: int = 0  # vectors the IVF quantiser was trained with


def choose_layout(count: int, dim: int) -> tuple[str, int]:
    """(layout, nlist) for a collection: exact while cheap, IVF with 8-bit codes beyond.

    IVF-SQ8 keeps 1M 512-d vectors in ~0.5 GB at recall@10 ≈ 0.97 in ~1 ms a query.
    """
    if count * dim <= FLAT_MAX_COMPONENTS:
        return "flat", 0
    nlist = 2 ** int(round(np.log2(2 * np.sqrt(count))))
    # k-means wants ~39 points per centroid or more.
    return "ivf-sq8", int(min(max(nlist, 256), 8192, max(1, count // _TRAIN_POINTS_PER_LIST)))


def gpu_count() -> int:
    """GPUs FAISS can use: zero with faiss-cpu or without a GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:
        return 0


def kmeans_device() -> str:
    """Where IVF k-means runs: "gpu" when FAISS has GPUs, else "cpu"."""
    return "gpu" if gpu_count() > 0 else "cpu"


def train_ivf(ivf: Any, sample: np.ndarray) -> str:
    """Train an IVF index's coarse quantiser on `sample` (N, D), its k-means on the GPUs when
    FAISS has any (the assignment step, ~all of the cost, runs on a GPU copy of the centroids);
    return the device it ran on."""
    device = kmeans_device()
    if device == "gpu":
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
    ivf.train(sample)
    if device == "gpu":
        ivf.clustering_index = None  # the GPU copy is not part of the index (nor of its file)
    return device


class VectorIndex:
    """Inner-product search over unit vectors; index ids are catalog item ids."""

    def __init__(self, tag: IndexTag, index: Any | None = None) -> None:
        self.tag = tag
        # faiss's generated stubs are imprecise (numpy arrays are accepted everywhere): keep it Any.
        self.index: Any = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(tag.dim))
        self._gpu: Any | None = None

    @classmethod
    def build(cls, tag: IndexTag, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """A new index holding (ids, vectors), laid out for their number."""
        layout, nlist = choose_layout(len(ids), tag.dim)
        if layout == "flat":
            index = cls(replace(tag, layout="flat", nlist=0, trained_on=0))
        else:
            quantizer = faiss.IndexFlatIP(tag.dim)
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, tag.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(0)
            n_train = min(len(ids), nlist * _TRAIN_POINTS_PER_LIST)
            train_ivf(ivf, np.ascontiguousarray(vectors[rng.choice(len(ids), n_train, replace=False)], dtype=np.float32))
            index = cls(replace(tag, layout=layout, nlist=nlist, trained_on=len(ids)), ivf)
        index.add(ids, vectors)
        return index

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def type_name(self) -> str:
        return self.tag.layout

    @property
    def nprobe(self) -> int:
        return max(16, self.tag.nlist // 128)

    @property
    def memory_bytes(self) -> int:
        if self.tag.layout == "flat":
            # Float32 vectors plus the id map (an int64 per vector, twice for the reverse map).
            return self.count * (self.tag.dim * 4 + 16)
        # 8-bit codes and an id per vector, plus the float32 centroids.
        return self.count * (self.tag.dim + 8) + self.tag.nlist * self.tag.dim * 4

    def needs_rebuild(self) -> bool:
        """True when the collection has outgrown (or shrunk below) this layout."""
        layout, _ = choose_layout(self.count, self.tag.dim)
        if layout != self.tag.layout:
            # Hysteresis: an IVF index only turns flat again below half the threshold.
            return not (self.tag.layout == "ivf-sq8" and self.count * self.tag.dim * 2 > FLAT_MAX_COMPONENTS)
        return self.tag.layout == "ivf-sq8" and self.count > RETRAIN_GROWTH * self.tag.trained_on

    def with_seq(self, seq: int) -> None:
        self.tag = replace(self.tag, seq=seq)

    def ids(self) -> np.ndarray:
        """Every id in the index, sorted (int64)."""
        if self.tag.layout == "flat":
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        invlists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(self.index.nlist)
            if invlists.list_size(i)
        ]
        return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (N,) int64 ids with (N, D) unit vectors, replacing any already present."""
        if len(ids) == 0:
            return
        self.remove(ids)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids) == 0:
            return
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, each (Q, k); missing slots have id -1.

        `allowed` restricts the search to those ids before ranking, so k results
        come back whenever k allowed items exist.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, D)
        k = max(1, min(k, self.count)) if self.count else 1
        if allowed is None:
            if self.tag.layout == "flat":
                return self._searcher().search(q, k)
            return self._search_ivf(q, k, None, self.nprobe)
        # GPU indexes ignore id selectors: filtered searches always run on the CPU copy.
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        if self.tag.layout == "flat":
            params = faiss.SearchParameters()
            params.sel = sel
            return self.index.search(q, k, params=params)
        wanted = min(k, len(allowed))
        scores, ids = self._search_ivf(q, k, sel, self.nprobe)
        if int((ids >= 0).sum(axis=1).min()) < wanted:
            # The probed lists held too few allowed items: scan every list, so k still come back.
            scores, ids = self._search_ivf(q, k, sel, self.tag.nlist)
        return scores, ids

    def _search_ivf(self, q: np.ndarray, k: int, sel: Any, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if sel is not None:
            params.sel = sel
        return self.index.search(q, k, params=params)

    def _searcher(self) -> Any:
        if self._gpu is None and gpu_count() > 0 and self.count > 0:
            self._gpu = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu if self._gpu is not None else self.index

    def save(self, path: Path) -> None:
        """Write atomically: temp file, fsync, rename, fsync of the directory."""
        header = json.dumps(asdict(self.tag)).encode()
        payload = faiss.serialize_index(self.index).tobytes()
        digest = hashlib.sha256(header + payload).digest()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + _LEN.pack(len(header)) + header + _LEN.pack(len(payload)))
                f.write(payload)
                f.write(digest)
                f.flush()
                os.fsync(f.fileno())
            failpoints.hit(failpoints.INDEX_AFTER_TEMP_WRITE)
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise DiskFull(
                    f"cannot save the search index {path}: no space left on the device; free some space and "
                    "run the command again (the catalog and the previous index file are intact)"
                ) from None
            raise
        failpoints.hit(failpoints.INDEX_AFTER_REPLACE)
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """Read an index file; None when it is missing, truncated or damaged."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            if not data.startswith(MAGIC):
                return None
            pos = len(MAGIC)
            (hlen,) = _LEN.unpack_from(data, pos)
            header = data[pos + 8 : pos + 8 + hlen]
            pos += 8 + hlen
            (plen,) = _LEN.unpack_from(data, pos)
            payload = data[pos + 8 : pos + 8 + plen]
            digest = data[pos + 8 + plen :]
            if len(payload) != plen or digest != hashlib.sha256(header + payload).digest():
                return None
            tag = IndexTag(**json.loads(header))
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except (struct.error, ValueError, TypeError, RuntimeError, KeyError):
            return None
        if index.d != tag.dim:
            return None
        return cls(tag, index)
