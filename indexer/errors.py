"""Typed exceptions raised by the clipdex library.

The library never prints and never exits: callers catch these. Each message is a
single line that names the file, value or option that fixes the problem.
"""

from __future__ import annotations


class ClipdexError(Exception):
    """Base class of every error clipdex raises on purpose."""


class ModelNotAvailable(ClipdexError):
    """A model's weights cannot be loaded (offline, unknown tag, bad checkpoint)."""


class UnknownModel(ClipdexError):
    """A model name is neither an open_clip architecture nor a saved model."""


class CheckpointError(ClipdexError):
    """A checkpoint file is missing, unsafe, or does not fit the architecture."""


class QueryError(ClipdexError):
    """A search query or one of its terms is malformed."""


class QueryTooLarge(QueryError):
    """A query has more terms, or a longer term, than the limit allows."""


class NonFiniteQuery(QueryError):
    """A query's vector holds infinity or NaN (an overflowing weight, a damaged stored vector)."""


class NoVectors(ClipdexError):
    """The library has no vectors for the requested model and collection."""


class LibraryBusy(ClipdexError):
    """Another process holds the library's write lock."""

    def __init__(self, pid: int | None, host: str | None = None) -> None:
        who = f"pid {pid}" if pid else "another process"
        if host:
            who += f" on {host}"
        super().__init__(f"library is busy ({who}); wait for it to finish and try again")
        self.pid = pid
        self.host = host


class PathNotFound(ClipdexError):
    """A path given to index or forget does not exist or is not a root."""


class CatalogError(ClipdexError):
    """The catalog database cannot be opened or is damaged."""


class DatabaseDriverMissing(CatalogError):
    """The catalog URL needs a database driver whose Python package is not installed."""

    def __init__(self, url: str, module: str, package: str) -> None:
        super().__init__(
            f"the catalog {url} needs the database driver {module}, which is not installed: "
            f"pip install '{package}' (or name an installed driver in the URL, as in postgresql+psycopg://)"
        )
        self.module = module
        self.package = package


class DiskFull(ClipdexError):
    """A write failed because the disk (or the database server's disk) is full; nothing was half-written."""


class InputFileError(ClipdexError):
    """A user-supplied input file (texts, pairs, embeddings) cannot be read."""


class SavedModelError(ClipdexError):
    """A saved model's name is invalid, taken by an architecture, or its files are missing."""
