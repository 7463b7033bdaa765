"""Keep each model's FAISS indexes in step with the catalog.

An index is loaded from its file, checked against the catalog it claims to
reflect, and then caught up by replaying the catalog's change log; a missing,
damaged or foreign file is rebuilt from the stored vectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from indexer.catalog import Catalog, ModelRow
from indexer.vector_index import IndexTag, VectorIndex, remove_stale_temps
from indexer.errors import DiskFull


@dataclass(frozen=True)
class IndexState:
    """What `status` reports of one index file."""

    type: str
    vectors: int
    in_sync: bool
    size_bytes: int
    memory_bytes: int


class IndexStore:
    """The index files of one library, under `<library>/indexes/`."""

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self.folder = folder
        self.catalog = catalog
        self._loaded: dict[tuple[str, str], VectorIndex] = {}
        self._dirty: set[tuple[str, str]] = set()  # loaded indexes newer than their file
        remove_stale_temps(folder)  # left by a run killed between writing and renaming

    def path_for(self, model: ModelRow, kind: str) -> Path:
        digest = hashlib.sha256(model.fingerprint.encode()).hexdigest()[:16]
        return self.folder / f"{digest}-{kind}.faiss"

    def get(self, model: ModelRow, kind: str) -> VectorIndex:
        """The index for (model, kind), reflecting every committed catalog change.

        Saving the caught-up file is best effort here: a search on a full or
        read-only disk still answers from memory.
        """
        try:
            return self.sync(model, kind)
        except (DiskFull, OSError):
            return self._loaded[(model.fingerprint, kind)]

    def sync(self, model: ModelRow, kind: str) -> VectorIndex:
        """Like `get`, but the file on disk must be brought up to date too; raises DiskFull or OSError."""
        key = (model.fingerprint, kind)
        index = self._loaded.get(key)
        if index is None:
            index = VectorIndex.load(self.path_for(model, kind))
            if index is None or index.tag != self._tag_like(index.tag, model, kind):
                index = self._rebuild(model, kind)
                self._dirty.add(key)
            self._loaded[key] = index
        if self._catch_up(model, index):
            if index.needs_rebuild():
                index = self._rebuild(model, kind)
                self._loaded[key] = index
            self._dirty.add(key)
        if key in self._dirty:
            self.save(model, index)
            self._dirty.discard(key)
        return index

    def save(self, model: ModelRow, index: VectorIndex) -> None:
        index.save(self.path_for(model, index.tag.kind))

    def state(self, model: ModelRow, kind: str) -> IndexState:
        """Inspect the file on disk without changing it."""
        path = self.path_for(model, kind)
        index = VectorIndex.load(path)
        if index is None:
            return IndexState("none", 0, False, 0, 0)
        seq = self.catalog.current_seq(model.id, kind)
        in_sync = index.tag == self._tag_like(index.tag, model, kind) and index.tag.seq == seq
        return IndexState(index.type_name, index.count, in_sync, path.stat().st_size, index.memory_bytes)

    def _tag_like(self, tag: IndexTag, model: ModelRow, kind: str) -> IndexTag:
        """The tag a valid file for (model, kind) of this catalog has, keeping its seq and layout."""
        return replace(tag, catalog_id=self.catalog.catalog_id, model=model.fingerprint, kind=kind, dim=model.dim)

    def _rebuild(self, model: ModelRow, kind: str) -> VectorIndex:
        # Read the seq first: anything committed while the vectors are read is replayed later.
        seq = self.catalog.current_seq(model.id, kind)
        ids, vectors = self.catalog.vectors(model.id, kind)
        return VectorIndex.build(IndexTag(self.catalog.catalog_id, model.fingerprint, kind, seq, model.dim), ids, vectors)

    def _catch_up(self, model: ModelRow, index: VectorIndex) -> bool:
        changed, seq = self.catalog.changed_since(model.id, index.tag.kind, index.tag.seq)
        if not changed:
            return False
        index.remove(changed)
        ids, vectors = self.catalog.vectors(model.id, index.tag.kind, changed)
        index.add(ids, vectors)
        index.with_seq(seq)
        return True
