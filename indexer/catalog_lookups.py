"""The catalog's look-ups: items, their files and vectors, and the counts status reports."""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np
from sqlalchemy import and_, func, or_, select

from indexer import filter_sql
from indexer.catalog_connection import CatalogConnection, _chunks
from indexer.filters import SearchFilter
from indexer.items import IMAGE, INDEXED, SKIPPED, FileRow, ItemRow
from indexer.schema import embeddings, items


class PhotoFacts(NamedTuple):
    """An indexed photo as `clipdex duplicates` sees it."""

    id: int
    path: bytes
    display_path: str | None
    size: int | None
    width: int | None
    height: int | None
    taken_at: float | None  # EXIF capture time
    date_key: float | None  # capture time, else mtime
    content_hash: str | None


class CatalogLookups(CatalogConnection):
    """Read-only queries over items and their vectors."""

    def vector_counts(self) -> dict[tuple[int, str], int]:
        """Number of vectors per (model id, kind)."""
        q = (
            select(embeddings.c.model_id, items.c.kind, func.count())
            .join(items, items.c.id == embeddings.c.item_id)
            .group_by(embeddings.c.model_id, items.c.kind)
        )
        with self._read() as conn:
            return {(m, k): int(n) for m, k, n in conn.execute(q).all()}

    # -- files -----------------------------------------------------------------------------

    def files_under(self, prefixes: Sequence[bytes]) -> list[FileRow]:
        """Image items whose path is a prefix itself or lies below it."""
        if not prefixes:
            return []
        conds = []
        for p in prefixes:
            base = p.rstrip(b"/") or b"/"
            lo = base if base.endswith(b"/") else base + b"/"
            # Paths below `base` sort between "base/" and "base0" ('0' follows '/').
            conds.append(or_(items.c.path == base, and_(items.c.path >= lo, items.c.path < lo[:-1] + b"0")))
        q = select(
            items.c.id, items.c.path, items.c.size, items.c.mtime_ns, items.c.content_hash, items.c.status,
            items.c.decode_tries,
        ).where(items.c.kind == IMAGE, or_(*conds))
        with self._read() as conn:
            return [
                FileRow(r.id, bytes(r.path), r.size, r.mtime_ns, r.content_hash, r.status, r.decode_tries)
                for r in conn.execute(q)
            ]

    def indexed_by_hash(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """Indexed image items for each content hash."""
        out: dict[str, list[int]] = {}
        with self._read() as conn:
            for chunk in _chunks(list(set(hashes))):
                q = select(items.c.content_hash, items.c.id).where(
                    items.c.kind == IMAGE, items.c.status == INDEXED, items.c.content_hash.in_(chunk)
                )
                for h, i in conn.execute(q):
                    out.setdefault(h, []).append(i)
        return out

    def exif_unread(self) -> list[tuple[int, bytes]]:
        """Indexed images whose EXIF fields this version of `indexer.exif` has not read: (id, path)."""
        from indexer.exif import EXIF_VERSION

        q = (
            select(items.c.id, items.c.path)
            .where(
                items.c.kind == IMAGE, items.c.status == INDEXED,
                or_(items.c.exif_version.is_(None), items.c.exif_version < EXIF_VERSION),
            )
            .order_by(items.c.id)
        )  # fmt: skip
        with self._read() as conn:
            return [(i, bytes(p)) for i, p in conn.execute(q)]

    # -- vectors ---------------------------------------------------------------------------

    def missing_vectors(self, model_id: int, kind: str) -> list[tuple[int, bytes | str]]:
        """Indexed items of `kind` with no vector from the model: (id, path bytes or text)."""
        has = select(embeddings.c.item_id).where(embeddings.c.model_id == model_id)
        col = items.c.path if kind == IMAGE else items.c.text
        q = (
            select(items.c.id, col)
            .where(items.c.kind == kind, items.c.status == INDEXED, items.c.id.not_in(has))
            .order_by(items.c.id)
        )
        with self._read() as conn:
            return [(i, bytes(v) if isinstance(v, (bytes, memoryview)) else v) for i, v in conn.execute(q)]

    def vectors(self, model_id: int, kind: str, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors as (ids (N,) int64, unit vectors (N, D) float32), by id."""
        base = (
            select(embeddings.c.item_id, embeddings.c.vector)
            .join(items, items.c.id == embeddings.c.item_id)
            .where(embeddings.c.model_id == model_id, items.c.kind == kind)
        )
        rows: list[tuple[int, bytes]] = []
        with self._read() as conn:
            if ids is None:
                rows = [(i, v) for i, v in conn.execute(base.order_by(embeddings.c.item_id))]
            else:
                for chunk in _chunks(sorted(set(ids))):
                    rows += [(i, v) for i, v in conn.execute(base.where(embeddings.c.item_id.in_(chunk)))]
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        out_ids = np.fromiter((i for i, _ in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(bytes(v) for _, v in rows)
        mat = np.frombuffer(blob, dtype=self.vector_dtype).astype(np.float32).reshape(len(rows), -1)  # (N, D)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)  # (N, 1)
        return out_ids, mat / np.maximum(norms, 1e-12)

    def photo_facts(self) -> list[PhotoFacts]:
        """What duplicate grouping needs of every indexed image item, by id, in one query."""
        c = items.c
        q = (
            select(c.id, c.path, c.display_path, c.size, c.width, c.height, c.taken_at, c.date_key, c.content_hash)
            .where(c.kind == IMAGE, c.status == INDEXED)
            .order_by(c.id)
        )
        with self._read() as conn:
            rows = conn.execute(q).tuples().all()
        return [PhotoFacts(i, bytes(p), *rest) for i, p, *rest in rows]

    # -- look-ups for search ---------------------------------------------------------------

    def filter_ids(self, kind: str, flt: SearchFilter) -> np.ndarray:
        """Ids of indexed items of `kind` that pass the filter's item fields, as int64 (SQL: indexer.filter_sql)."""
        query = filter_sql.filter_query(kind, flt)
        with self._read() as conn:
            rows = conn.execute(query.statement).all()
        ids = [r.id for r in rows if query.keeps(r)]
        return np.fromiter(ids, dtype=np.int64, count=len(ids))

    def items(self, ids: Sequence[int]) -> dict[int, ItemRow]:
        out: dict[int, ItemRow] = {}
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                for r in conn.execute(select(items).where(items.c.id.in_(chunk))):
                    out[r.id] = ItemRow(
                        r.id, r.kind, r.display_path, r.text, r.width, r.height, r.taken_at,
                        r.date_key, r.camera, r.size, r.status, r.reason,
                        r.lens, r.focal_mm, r.iso, r.gps_lat, r.gps_lon,
                    )
        return out

    def item_path(self, item_id: int) -> bytes | None:
        with self._read() as conn:
            value = conn.execute(select(items.c.path).where(items.c.id == item_id)).scalar()
        return None if value is None else bytes(value)

    # -- status ----------------------------------------------------------------------------

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of items per (kind, status)."""
        q = select(items.c.kind, items.c.status, func.count()).group_by(items.c.kind, items.c.status)
        with self._read() as conn:
            return {(k, s): int(n) for k, s, n in conn.execute(q)}

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped file, by path."""
        q = select(items.c.display_path, items.c.reason).where(items.c.status == SKIPPED).order_by(items.c.display_path)
        with self._read() as conn:
            return [(p, r or "") for p, r in conn.execute(q)]
