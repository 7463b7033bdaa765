"""The catalog's writes: a `WriteBatch` in one transaction, imports, texts and removals.

Every vector a write adds or removes is appended to the change log (`changes`)
in the same transaction, so FAISS indexes can replay it to catch up.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sqlalchemy import Connection, delete, insert, select, update

from indexer import failpoints
from indexer.catalog_connection import CatalogConnection, _chunks
from indexer.decode import ImageInfo, path_str
from indexer.exif import EXIF_VERSION, PhotoExif
from indexer.items import IMAGE, INDEXED, SKIPPED, TEXT
from indexer.schema import changes, embeddings, items


@dataclass
class FileRecord:
    """An image file to insert or update, with its decode outcome and its vectors by model id."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: str
    info: ImageInfo | None = None
    reason: str | None = None  # set when the file is skipped
    decode_tries: int = 0  # runs in a row whose decoder process failed on it (crash, hang, memory)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # model id -> (D,) float32
    item_id: int | None = None  # set for an update of an existing item
    copy_from: int | None = None  # reuse this item's vectors (a copy of an indexed file)


@dataclass
class WriteBatch:
    """Everything one transaction changes."""

    records: list[FileRecord] = field(default_factory=list)
    renames: list[tuple[int, bytes, int, int]] = field(default_factory=list)  # id, path, size, mtime_ns
    touches: list[tuple[int, int, int]] = field(default_factory=list)  # id, size, mtime_ns
    removals: list[int] = field(default_factory=list)
    vectors: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # item, model, vector

    def is_empty(self) -> bool:
        return not (self.records or self.renames or self.touches or self.removals or self.vectors)


class CatalogWrites(CatalogConnection):
    """Writes: batches from the indexer, imported vectors, texts, and removing items."""

    def write(self, batch: WriteBatch) -> list[int]:
        """Commit a batch in one transaction; return the item ids of `batch.records`, in order."""
        if batch.is_empty():
            return []
        with self._write() as conn:
            self._remove_items(conn, batch.removals)
            for item_id, path, size, mtime_ns in batch.renames:
                conn.execute(
                    update(items)
                    .where(items.c.id == item_id)
                    .values(path=path, display_path=path_str(path), size=size, mtime_ns=mtime_ns, updated_at=time.time())
                )
            if batch.touches:
                for item_id, size, mtime_ns in batch.touches:
                    conn.execute(update(items).where(items.c.id == item_id).values(size=size, mtime_ns=mtime_ns))
            half = len(batch.records) // 2
            ids = [self._write_record(conn, rec) for rec in batch.records[:half]]
            failpoints.hit(failpoints.CATALOG_MID_BATCH)
            ids += [self._write_record(conn, rec) for rec in batch.records[half:]]
            self._put_vectors(conn, batch.vectors)
            failpoints.hit(failpoints.CATALOG_BEFORE_COMMIT)
        failpoints.hit(failpoints.CATALOG_AFTER_COMMIT)
        return ids

    def _write_record(self, conn: Connection, rec: FileRecord) -> int:
        info = rec.info
        taken = info.taken_at if info else None
        values = {
            "kind": IMAGE,
            "path": rec.path,
            "display_path": path_str(rec.path),
            "size": rec.size,
            "mtime_ns": rec.mtime_ns,
            "content_hash": rec.content_hash,
            "width": info.width if info else None,
            "height": info.height if info else None,
            "taken_at": taken,
            "date_key": taken if taken is not None else rec.mtime_ns / 1e9,
            "camera": info.camera if info else None,
            "orientation": info.orientation if info else None,
            "status": SKIPPED if rec.reason else INDEXED,
            "reason": rec.reason,
            "decode_tries": rec.decode_tries,
            "updated_at": time.time(),
            **exif_values(info.exif if info else None),
        }
        if rec.item_id is None:
            item_id = int(conn.execute(insert(items).values(**values).returning(items.c.id)).scalar_one())
        else:
            item_id = rec.item_id
            self._drop_vectors(conn, [item_id])  # the pixels changed: every old vector is stale
            conn.execute(update(items).where(items.c.id == item_id).values(**values))
        vecs = [(item_id, m, v) for m, v in rec.vectors.items()]
        if rec.copy_from is not None:
            q = select(embeddings.c.model_id, embeddings.c.vector).where(embeddings.c.item_id == rec.copy_from)
            vecs += [(item_id, m, self._decode_vector(b)) for m, b in conn.execute(q)]
        self._put_vectors(conn, vecs)
        return item_id

    def set_exif(self, found: Sequence[tuple[int, PhotoExif | None]]) -> None:
        """Store what `indexer.exif` read from already-indexed items (None: the file could not be read)."""
        if not found:
            return
        with self._write() as conn:
            for item_id, exif in found:
                conn.execute(update(items).where(items.c.id == item_id).values(**exif_values(exif or PhotoExif())))

    def _put_vectors(
        self, conn: Connection, vecs: Sequence[tuple[int, int, np.ndarray]], kind: str | None = None
    ) -> None:
        """Insert or replace vectors, logging each change; `kind` skips the look-up when known."""
        if not vecs:
            return
        kinds = self._kinds(conn, [i for i, _, _ in vecs]) if kind is None else None
        by_model: dict[int, list[int]] = {}
        for i, m, _ in vecs:
            by_model.setdefault(m, []).append(i)
        for m, ids in by_model.items():
            for chunk in _chunks(ids):
                conn.execute(delete(embeddings).where(embeddings.c.model_id == m, embeddings.c.item_id.in_(chunk)))
        conn.execute(
            insert(embeddings),
            [{"item_id": i, "model_id": m, "vector": self._encode_vector(v)} for i, m, v in vecs],
        )
        conn.execute(
            insert(changes),
            [{"model_id": m, "kind": kind or kinds[i], "item_id": i} for i, m, _ in vecs],  # type: ignore[index]
        )

    def _drop_vectors(self, conn: Connection, ids: Sequence[int]) -> None:
        for chunk in _chunks(list(ids)):
            q = (
                select(embeddings.c.item_id, embeddings.c.model_id, items.c.kind)
                .join(items, items.c.id == embeddings.c.item_id)
                .where(embeddings.c.item_id.in_(chunk))
            )
            rows = conn.execute(q).all()
            if rows:
                conn.execute(insert(changes), [{"model_id": m, "kind": k, "item_id": i} for i, m, k in rows])
                conn.execute(delete(embeddings).where(embeddings.c.item_id.in_(chunk)))

    def _remove_items(self, conn: Connection, ids: Sequence[int]) -> None:
        self._drop_vectors(conn, ids)
        for chunk in _chunks(list(ids)):
            conn.execute(delete(items).where(items.c.id.in_(chunk)))

    def _kinds(self, conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for chunk in _chunks(list(set(ids))):
            out.update({i: k for i, k in conn.execute(select(items.c.id, items.c.kind).where(items.c.id.in_(chunk)))})
        return out

    # -- texts -----------------------------------------------------------------------------

    def add_texts(self, texts: Sequence[str]) -> tuple[list[int], int]:
        """Insert texts not already present; return (ids of the new ones, duplicates skipped)."""
        unique = list(dict.fromkeys(texts))
        keys = {t: text_key(t) for t in unique}
        with self._write() as conn:
            present: set[str] = set()
            for chunk in _chunks(list(keys.values())):
                present.update(conn.execute(select(items.c.text_key).where(items.c.text_key.in_(chunk))).scalars())
            new = [t for t in unique if keys[t] not in present]
            now = time.time()
            ids: list[int] = []
            if new:
                rows = [{"kind": TEXT, "text": t, "text_key": keys[t], "status": INDEXED, "updated_at": now} for t in new]
                q = insert(items).returning(items.c.id, sort_by_parameter_order=True)
                ids = [int(i) for i in conn.execute(q, rows).scalars()]
        return ids, len(texts) - len(ids)

    def import_images(
        self, paths: Sequence[bytes], stats: Sequence[tuple[int, int] | None], vectors: np.ndarray, model_id: int
    ) -> tuple[int, int]:
        """Insert or update image items with precomputed vectors; return (added, replaced).

        `stats` holds (size, mtime_ns) for files that exist, so a later scan sees them unchanged.
        """
        added = replaced = 0
        for start in range(0, len(paths), 5000):
            chunk = list(paths[start : start + 5000])
            with self._write() as conn:
                known: dict[bytes, int] = {}
                for part in _chunks(chunk):
                    q = select(items.c.path, items.c.id).where(items.c.path.in_(part))
                    known.update({bytes(p): i for p, i in conn.execute(q)})
                now = time.time()
                rows = []
                for path, st in zip(chunk, stats[start : start + 5000]):
                    if path in known:
                        continue
                    size, mtime_ns = st if st is not None else (None, None)
                    rows.append({
                        "kind": IMAGE, "path": path, "display_path": path_str(path), "size": size,
                        "mtime_ns": mtime_ns, "date_key": mtime_ns / 1e9 if mtime_ns else None,
                        "status": INDEXED, "updated_at": now,
                    })
                if rows:
                    ins = insert(items).returning(items.c.path, items.c.id, sort_by_parameter_order=True)
                    known.update({bytes(p): i for p, i in conn.execute(ins, rows)})
                replaced += len(chunk) - len(rows)
                added += len(rows)
                vecs = [(known[p], model_id, v) for p, v in zip(chunk, vectors[start : start + 5000])]
                self._put_vectors(conn, vecs, kind=IMAGE)
        return added, replaced

    def import_texts(self, texts: Sequence[str], vectors: np.ndarray, model_id: int) -> tuple[int, int]:
        """Insert texts (or reuse identical ones) with precomputed vectors; return (added, replaced)."""
        new_ids, _ = self.add_texts(texts)
        keys = [text_key(t) for t in texts]
        with self._write() as conn:
            ids: dict[str, int] = {}
            for part in _chunks(list(set(keys))):
                ids.update({k: i for k, i in conn.execute(select(items.c.text_key, items.c.id).where(items.c.text_key.in_(part)))})
            self._put_vectors(conn, [(ids[k], model_id, v) for k, v in zip(keys, vectors)], kind=TEXT)
        return len(new_ids), len(set(keys)) - len(new_ids)


def exif_values(exif: PhotoExif | None) -> dict[str, object]:
    """The item columns of a file's EXIF fields; all NULL, and not read, without them."""
    return {
        "lens": exif.lens if exif else None,
        "focal_mm": exif.focal_mm if exif else None,
        "iso": exif.iso if exif else None,
        "gps_lat": exif.lat if exif else None,
        "gps_lon": exif.lon if exif else None,
        "exif_version": EXIF_VERSION if exif else None,
    }


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
