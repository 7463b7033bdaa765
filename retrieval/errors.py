"""The typed errors of clipdex, where users import them: `from retrieval.errors import NoVectors`.

They are defined in `indexer.errors` (the lowest layer raises them too); this
module re-exports every one of them.
"""

from __future__ import annotations

from indexer.errors import (
    BadOption,
    CatalogError,
    CheckpointError,
    ClipdexError,
    DatabaseDriverMissing,
    DiskFull,
    ExecutorUnavailable,
    FiltersOnTexts,
    InputFileError,
    ItemsListNeeded,
    LibraryBusy,
    ModelNeeded,
    ModelNotAvailable,
    NameTaken,
    NoVectors,
    NonFiniteQuery,
    PathNotFound,
    QueryError,
    QueryOptionError,
    QueryTooLarge,
    SavedModelError,
    UnknownEmbeddingFormat,
    UnknownModel,
    UnknownModelName,
    WeightsChanged,
    WeightsUnreachable,
)

__all__ = [
    "BadOption",
    "CatalogError",
    "CheckpointError",
    "ClipdexError",
    "DatabaseDriverMissing",
    "DiskFull",
    "ExecutorUnavailable",
    "FiltersOnTexts",
    "InputFileError",
    "ItemsListNeeded",
    "LibraryBusy",
    "ModelNeeded",
    "ModelNotAvailable",
    "NameTaken",
    "NoVectors",
    "NonFiniteQuery",
    "PathNotFound",
    "QueryError",
    "QueryOptionError",
    "QueryTooLarge",
    "SavedModelError",
    "UnknownEmbeddingFormat",
    "UnknownModel",
    "UnknownModelName",
    "WeightsChanged",
    "WeightsUnreachable",
]
