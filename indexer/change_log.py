"""The catalog's change log, as FAISS indexes read it to catch up.

Every vector a write adds or removes appends a row (model, kind, item) to the
`changes` table in the same transaction (see `catalog_writes`); an index records
the last seq it replayed and asks for the items changed since.
"""

from __future__ import annotations

from sqlalchemy import func, select

from indexer.catalog_connection import CatalogConnection
from indexer.schema import changes


class ChangeLog(CatalogConnection):
    """Reading the change log: its latest seq, and the items changed after a seq."""

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
