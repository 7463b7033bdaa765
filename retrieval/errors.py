"""The typed errors of clipdex, where users import them: `from retrieval.errors import NoVectors`.

They are defined in `indexer.errors` (the lowest layer raises them too); this
module re-exports every one of them.
"""

from __future__ import annotations

from indexer.errors import (
    CatalogError,
    CheckpointError,
    ClipdexError,
    DatabaseDriverMissing,
    DiskFull,
    InputFileError,
    LibraryBusy,
    ModelNotAvailable,
    NoVectors,
    NonFiniteQuery,
    PathNotFound,
    QueryError,
    QueryTooLarge,
    SavedModelError,
    UnknownModel,
)

__all__ = [
    "CatalogError",
    "CheckpointError",
    "ClipdexError",
    "DatabaseDriverMissing",
    "DiskFull",
    "InputFileError",
    "LibraryBusy",
    "ModelNotAvailable",
    "NoVectors",
    "NonFiniteQuery",
    "PathNotFound",
    "QueryError",
    "QueryTooLarge",
    "SavedModelError",
    "UnknownModel",
]
