"""The catalog: the source of truth for items, their metadata and their vectors.

This module owns every query against the catalog tables. A `WriteBatch` is
committed in one transaction, and every vector it adds or removes is appended to
the change log that FAISS indexes replay to catch up.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
import uuid
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NoReturn, Sequence

import numpy as np
from sqlalchemy import Connection, and_, delete, func, insert, inspect, or_, select, update
from sqlalchemy.exc import ArgumentError, DBAPIError

from indexer import db_guard, failpoints, filter_sql, schema
from indexer.decode import ImageInfo, path_str
from indexer.scan import is_under
from indexer.schema import changes, embeddings, items, meta, models, roots
from indexer.errors import CatalogError, DiskFull
from indexer.filters import SearchFilter
from indexer.items import IMAGE, INDEXED, SKIPPED, TEXT, FileRow, ItemRow, ModelRow

_CHUNK = 500  # rows per IN (...) clause, well under every backend's parameter limit


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


class Catalog:
    """A catalog database reached through a SQLAlchemy URL (SQLite by default)."""

    def __init__(self, url: str, vector_dtype: str = "float16", expected_id: str | None = None) -> None:
        """Open (creating or migrating) the catalog at `url`.

        With `expected_id` (the id the library recorded when it created its catalog), a
        catalog that turns out empty or different raises CatalogError instead of being
        started afresh: a truncated or replaced file must never look like a new library.
        """
        self.url = db_guard.hide_password(url)  # how messages name it; only the engine holds the password
        try:
            self.engine = schema.make_engine(url)
        except (ArgumentError, ValueError, ImportError) as e:
            raise db_guard.url_error(e, self.url) from None
        try:
            if expected_id is not None:
                self._check_identity(expected_id)
            schema.upgrade(self.engine)
            self.catalog_id = self._ensure_setting("catalog_id", uuid.uuid4().hex)
            # Fixed when the catalog is created: every stored vector has this dtype.
            self.vector_dtype = np.dtype(self._ensure_setting("vector_dtype", vector_dtype))
        except DBAPIError as e:
            typed = db_guard.translate(e, self.url)
            raise typed or CatalogError(f"cannot open the catalog at {self.url}: {db_guard.reason(e)}") from None

    def _check_identity(self, expected_id: str) -> None:
        found = None
        file = self.engine.url.database if self.dialect == "sqlite" else None
        if file is None or (os.path.exists(file) and os.path.getsize(file) > 0):  # never touch an empty file
            with self.engine.connect() as conn:
                if "meta" in inspect(conn).get_table_names():
                    found = conn.execute(select(meta.c.value).where(meta.c.key == "catalog_id")).scalar()
        if found != expected_id:
            what = "is empty" if found is None else f"is another catalog ({found})"
            raise CatalogError(
                f"the catalog at {self.url} {what}, but this library was indexed into catalog {expected_id}: "
                "it was truncated, replaced or lost. clipdex does not start it over silently: restore it from a "
                "backup, or remove catalog_id from the library's config.json to begin a new, empty catalog"
            )

    def check_integrity(self, full: bool = False) -> list[str]:
        """Problems SQLite's quick_check (or full integrity_check) finds; [] when sound (always on PostgreSQL)."""
        try:
            return db_guard.integrity_problems(self.engine, full)
        except DBAPIError as e:
            _reraise(e, self.url)

    def writer_lock(self, holder_pid: int, host: str) -> AbstractContextManager[None]:
        """On PostgreSQL, a session advisory lock on this catalog (writers on other machines
        cannot see the local lock file); a no-op on SQLite. Entering raises LibraryBusy."""
        return db_guard.advisory_lock(self.engine, f"clipdex:{self.catalog_id}", holder_pid, host)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(immediate=True)
                with conn.begin():
                    yield conn
        except DBAPIError as e:
            _reraise(e, self.url)
        except OSError as e:  # a full disk met outside the driver (the transaction rolled back)
            if e.errno != errno.ENOSPC:
                raise
            raise DiskFull(
                f"cannot write the catalog {self.url}: the disk is full ({e.strerror or e}). Every batch "
                "committed before is kept; free some space and run the command again to resume"
            ) from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except DBAPIError as e:
            _reraise(e, self.url)

    def _ensure_setting(self, key: str, default: str) -> str:
        with self._write() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            if value is None:
                value = default
                conn.execute(insert(meta).values(key=key, value=value))
            return str(value)

    # -- settings --------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._read() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            return None if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(delete(meta).where(meta.c.key == key))
            conn.execute(insert(meta).values(key=key, value=value))

    # -- models ----------------------------------------------------------------------------

    def ensure_model(
        self, fingerprint: str, name: str, pretrained: str | None, checkpoint: str | None, dim: int
    ) -> ModelRow:
        """Return the model row for a fingerprint, creating it on first use."""
        found = self.model_by_fingerprint(fingerprint)
        if found is not None:
            return found
        with self._write() as conn:
            conn.execute(
                insert(models).values(
                    fingerprint=fingerprint,
                    name=name,
                    pretrained=pretrained,
                    checkpoint=checkpoint,
                    dim=dim,
                    created_at=time.time(),
                )
            )
        row = self.model_by_fingerprint(fingerprint)
        assert row is not None  # just inserted in a committed transaction
        return row

    def model_by_fingerprint(self, fingerprint: str) -> ModelRow | None:
        with self._read() as conn:
            r = conn.execute(select(models).where(models.c.fingerprint == fingerprint)).first()
        return None if r is None else ModelRow(r.id, r.fingerprint, r.name, r.pretrained, r.checkpoint, r.dim)

    def list_models(self) -> list[ModelRow]:
        with self._read() as conn:
            rows = conn.execute(select(models).order_by(models.c.id)).all()
        return [ModelRow(r.id, r.fingerprint, r.name, r.pretrained, r.checkpoint, r.dim) for r in rows]

    def vector_counts(self) -> dict[tuple[int, str], int]:
        """Number of vectors per (model id, kind)."""
        q = (
            select(embeddings.c.model_id, items.c.kind, func.count())
            .join(items, items.c.id == embeddings.c.item_id)
            .group_by(embeddings.c.model_id, items.c.kind)
        )
        with self._read() as conn:
            return {(m, k): int(n) for m, k, n in conn.execute(q).all()}

    # -- roots -----------------------------------------------------------------------------

    def add_roots(self, paths: Iterable[bytes]) -> None:
        known = set(self.list_roots())
        new = [p for p in dict.fromkeys(paths) if p not in known]
        if new:
            with self._write() as conn:
                conn.execute(insert(roots), [{"path": p, "added_at": time.time()} for p in new])

    def list_roots(self) -> list[bytes]:
        with self._read() as conn:
            return [bytes(p) for p in conn.execute(select(roots.c.path).order_by(roots.c.id)).scalars()]

    def remove_root(self, path: bytes) -> int:
        """Forget a root and the items under it that no other root covers; return items removed."""
        others = [r for r in self.list_roots() if r != path]
        ids = [f.id for f in self.files_under([path]) if not any(is_under(f.path, o) for o in others)]
        with self._write() as conn:
            conn.execute(delete(roots).where(roots.c.path == path))
            self._remove_items(conn, ids)
        return len(ids)

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

    # -- writes ----------------------------------------------------------------------------

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

    def _encode_vector(self, v: np.ndarray) -> bytes:
        return np.ascontiguousarray(v, dtype=self.vector_dtype).tobytes()

    def _decode_vector(self, blob: bytes) -> np.ndarray:
        """A stored vector as unit float32 (float16 storage loses a little of the norm)."""
        v = np.frombuffer(bytes(blob), dtype=self.vector_dtype).astype(np.float32)  # (D,)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

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

    def current_seq(self, model_id: int, kind: str) -> int:
        q = select(func.max(changes.c.seq)).where(changes.c.model_id == model_id, changes.c.kind == kind)
        with self._read() as conn:
            return int(conn.execute(q).scalar() or 0)

    def changed_since(self, model_id: int, kind: str, seq: int) -> tuple[list[int], int]:
        """Items whose vectors changed after `seq`, and the latest seq."""
        q = select(changes.c.seq, changes.c.item_id).where(
            changes.c.model_id == model_id, changes.c.kind == kind, changes.c.seq > seq
        )
        with self._read() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return [], seq
        return sorted({i for _, i in rows}), max(s for s, _ in rows)

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


def _reraise(e: DBAPIError, url: str) -> NoReturn:
    """Raise the typed error for a damaged or full database, else `e` itself."""
    typed = db_guard.translate(e, url)
    if typed is None:
        raise e
    raise typed from None


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _chunks(seq: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
