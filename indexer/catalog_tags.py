"""The catalog's tags: labels per item from a model (`clipdex tag`) or from its folders.

A source is a model id, or FOLDERS (0) for folder tags. `tagged` records which
version of each item a source last tagged (its content hash, or for folders a
digest of its path) under which label set, so a run plans only what changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, true

from indexer.catalog_connection import CatalogConnection, _chunks
from indexer.items import IMAGE, INDEXED
from indexer.schema import items, tagged, tags

FOLDERS = 0  # the source of folder tags


@dataclass(frozen=True)
class TagTarget:
    """An indexed image a source has to (re)tag, and the version of it being tagged."""

    id: int
    path: str
    version: str


@dataclass(frozen=True)
class ItemTags:
    """One item's tags from one source: (label, score) pairs; folder tags have no score."""

    target: TagTarget
    labels: tuple[tuple[str, float | None], ...]


class CatalogTags(CatalogConnection):
    """Tags: what a source must (re)tag, its tags written per item, and the tags of search results."""

    def tag_targets(self, source: int, labels_key: str) -> tuple[list[TagTarget], int]:
        """The indexed images `source` has not tagged in their current version with `labels_key`,
        and how many it has (left as they are)."""
        q = (
            select(items.c.id, items.c.display_path, items.c.content_hash, tagged.c.labels_key, tagged.c.item_version)
            .outerjoin(tagged, and_(tagged.c.item_id == items.c.id, tagged.c.source == source))
            .where(items.c.kind == IMAGE, items.c.status == INDEXED)
            .order_by(items.c.id)
        )
        todo: list[TagTarget] = []
        with self._read() as conn:
            rows = conn.execute(q).all()
        for r in rows:
            version = path_version(r.display_path or "") if source == FOLDERS else (r.content_hash or "")
            if (r.labels_key, r.item_version) != (labels_key, version):
                todo.append(TagTarget(r.id, r.display_path or "", version))
        return todo, len(rows) - len(todo)

    def write_tags(self, source: int, labels_key: str, batch: Sequence[ItemTags]) -> int:
        """Replace each item's tags from `source` and record it as tagged; return the tags written."""
        model_id = None if source == FOLDERS else source
        ids = [t.target.id for t in batch]
        rows = [
            {"item_id": t.target.id, "model_id": model_id, "label": label, "score": score}
            for t in batch for label, score in t.labels
        ]  # fmt: skip
        with self._write() as conn:
            for chunk in _chunks(ids):
                same = tags.c.model_id.is_(None) if model_id is None else tags.c.model_id == model_id
                conn.execute(delete(tags).where(same, tags.c.item_id.in_(chunk)))
                conn.execute(delete(tagged).where(tagged.c.source == source, tagged.c.item_id.in_(chunk)))
            if rows:
                conn.execute(insert(tags), rows)
            if batch:
                conn.execute(insert(tagged), [
                    {"item_id": t.target.id, "source": source, "labels_key": labels_key, "item_version": t.target.version}
                    for t in batch
                ])  # fmt: skip
        return len(rows)

    def tags_of(self, ids: Sequence[int], model_id: int | None = None) -> dict[int, list[str]]:
        """Each item's labels from model `model_id` and its folders (None: every source), sorted and without repeats."""
        out: dict[int, set[str]] = {}
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                q = select(tags.c.item_id, tags.c.label).where(tags.c.item_id.in_(chunk), _source(model_id))
                for item_id, label in conn.execute(q):
                    out.setdefault(item_id, set()).add(label)
        return {i: sorted(labels) for i, labels in out.items()}

    def tag_counts(self, model_id: int | None = None) -> dict[str, int]:
        """Items per label, from model `model_id` and the folders (None: every source together)."""
        q = select(tags.c.label, tags.c.item_id).where(_source(model_id)).distinct()
        counts: dict[str, int] = {}
        with self._read() as conn:
            for label, _ in conn.execute(q):
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


def _source(model_id: int | None) -> ColumnElement[bool]:
    """Tags of one model and the folders' (None: every source's)."""
    return true() if model_id is None else or_(tags.c.model_id.is_(None), tags.c.model_id == model_id)


def path_version(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()
