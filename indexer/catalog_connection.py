"""The catalog's connection: read and write transactions on its engine, and its vectors' bytes.

Every part of `Catalog` (settings, look-ups, the change log, writes) reaches the
database through `_read` and `_write`, which turn driver errors into typed ones
(a damaged or full database), and stores vectors through `_encode_vector`.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

import numpy as np
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from indexer import db_guard
from indexer.errors import DiskFull

_CHUNK = 500  # rows per IN (...) clause, well under every backend's parameter limit


class CatalogConnection:
    """The engine of a catalog database, and the transactions every part of the catalog uses."""

    engine: Engine
    url: str  # as messages name it, without the password
    vector_dtype: np.dtype  # fixed when the catalog is created: every stored vector has this dtype

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

    def _encode_vector(self, v: np.ndarray) -> bytes:
        return np.ascontiguousarray(v, dtype=self.vector_dtype).tobytes()

    def _decode_vector(self, blob: bytes) -> np.ndarray:
        """A stored vector as unit float32 (float16 storage loses a little of the norm)."""
        v = np.frombuffer(bytes(blob), dtype=self.vector_dtype).astype(np.float32)  # (D,)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v


def _reraise(e: DBAPIError, url: str) -> NoReturn:
    """Raise the typed error for a damaged or full database, else `e` itself."""
    typed = db_guard.translate(e, url)
    if typed is None:
        raise e
    raise typed from None


def _chunks(seq: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
