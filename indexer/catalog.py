"""The catalog: the source of truth for items, their metadata and their vectors.

`Catalog` opens the database (creating or migrating it), checks that it is the
catalog the library expects and that it is sound, and composes its parts, one
module each: `catalog_connection` (transactions, typed driver errors),
`catalog_settings` (settings, models, roots), `catalog_lookups` (items, files,
vectors, counts), `change_log` (what FAISS indexes replay), `catalog_writes`
(write batches, imports, texts, removals) and `catalog_tags` (tags). Callers use them all as `catalog.NAME(...)`.
"""

from __future__ import annotations

import os
import uuid
from contextlib import AbstractContextManager

import numpy as np
from sqlalchemy import delete, inspect, select
from sqlalchemy.exc import ArgumentError, DBAPIError

from indexer import db_guard, schema
from indexer.catalog_connection import _reraise
from indexer.catalog_lookups import CatalogLookups
from indexer.catalog_settings import CatalogSettings
from indexer.catalog_tags import CatalogTags
from indexer.catalog_writes import CatalogWrites, FileRecord, WriteBatch, text_key
from indexer.change_log import ChangeLog
from indexer.errors import CatalogError
from indexer.items import IMAGE, INDEXED, SKIPPED, TEXT, FileRow, ItemRow, ModelRow
from indexer.scan import is_under
from indexer.schema import meta, roots

__all__ = [
    "IMAGE", "INDEXED", "SKIPPED", "TEXT", "Catalog", "FileRecord", "FileRow", "ItemRow", "ModelRow",
    "WriteBatch", "text_key",
]


class Catalog(CatalogWrites, CatalogLookups, ChangeLog, CatalogSettings, CatalogTags):
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

    def remove_root(self, path: bytes) -> int:
        """Forget a root and the items under it that no other root covers; return items removed."""
        others = [r for r in self.list_roots() if r != path]
        ids = [f.id for f in self.files_under([path]) if not any(is_under(f.path, o) for o in others)]
        with self._write() as conn:
            conn.execute(delete(roots).where(roots.c.path == path))
            self._remove_items(conn, ids)
        return len(ids)
