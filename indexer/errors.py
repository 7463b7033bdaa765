"""Typed exceptions raised by the clipdex library.

The library never prints and never exits: callers catch these. Each message is a
single line that names the file, value or option that fixes the problem, in the
library's own terms: no CLI flag or command, since an HTTP client has none. Errors
that a flag or a request parameter fixes carry their data (the option, the model,
the path) as attributes, and the CLI (`cli/error_lines.py`) and the server
(`retrieval/server/errors.py`) word them for their users.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from indexer.models import ModelSpec


class ClipdexError(Exception):
    """Base class of every error clipdex raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its message and attributes: subclasses take data, not the message, as arguments.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[ClipdexError], args: tuple[object, ...], state: dict[str, object]) -> ClipdexError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class BadOption(ClipdexError):
    """An option's value is out of range, or contradicts another option.

    `name` is the option as the library's API spells it (`top`, `batch_size`), `value`
    the value given, and `rule` what the value must be, naming any other option as
    `{other}`. `worded` names the options as a layer's users know them.
    """

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name = name
        self.value = value
        self.rule = rule
        super().__init__(self.worded(str))

    def worded(self, option: Callable[[str], str]) -> str:
        """The message, with each option named by `option` (a CLI flag, a request parameter)."""
        others = {name: option(name) for name in re.findall(r"\{(\w+)\}", self.rule)}
        got = "" if isinstance(self.value, bool) else f" (got {self.value!r})"
        return f"{option(self.name)} must be {self.rule.format(**others)}{got}"


class ModelNotAvailable(ClipdexError):
    """A model's weights cannot be loaded (offline, unknown tag, bad checkpoint)."""


class WeightsChanged(ModelNotAvailable):
    """The library's model no longer loads with the weights it was indexed with."""

    def __init__(self, recorded: str, now: str) -> None:
        super().__init__(
            f"the library's model {recorded} no longer loads with the same weights (now {now}); "
            "re-index the library with another model, or restore the original weights"
        )
        self.recorded = recorded  # the fingerprint the library recorded
        self.now = now  # the fingerprint the weights give now


class WeightsUnreachable(ModelNotAvailable):
    """A pretrained model's weights are neither cached nor fetchable (offline, no network)."""

    def __init__(self, label: str, why: str) -> None:
        super().__init__(
            f"cannot load {label}: {why}; connect to the network once, populate the Hugging Face cache "
            "(HF_HOME), or load local weights from a checkpoint file; to try clipdex offline, use the "
            "built-in clipdex-tiny model"
        )
        self.label = label
        self.why = why

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.label, self.why))


class UnknownModel(ClipdexError):
    """A model name is neither an open_clip architecture nor a saved model."""


class UnknownModelName(UnknownModel):
    """No architecture and no model card has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}: neither an open_clip architecture nor a model card")
        self.name = name

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name,))


class CheckpointError(ClipdexError):
    """A checkpoint file is missing, unsafe, or does not fit the architecture."""


class QueryError(ClipdexError):
    """A search query or one of its terms is malformed."""


class QueryTooLarge(QueryError):
    """A query has more terms, or a longer term, than the limit allows."""


class NonFiniteQuery(QueryError):
    """A query's vector holds infinity or NaN (an overflowing weight, a damaged stored vector)."""


class QueryOptionError(QueryError, BadOption):
    """A search option (top, offset) is out of range."""


class FiltersOnTexts(QueryError):
    """A search of texts was given path or date filters, which apply to images only."""

    def __init__(self) -> None:
        super().__init__("path and date filters apply to images; they cannot be used in a search of texts")


class NoVectors(ClipdexError):
    """The library has no vectors for the requested model and collection."""

    def __init__(self, model: ModelSpec | None = None) -> None:
        if model is None:
            message = "the library is empty: nothing has been indexed into it yet"
        else:
            message = f"the library has no vectors from {model.label}; index it with that model first"
        super().__init__(message)
        self.model = model  # None: the library has no model at all (nothing indexed yet)


class ModelNeeded(NoVectors):
    """Vectors are imported into a library that has no model yet, without naming the model they come from."""

    def __init__(self) -> None:
        ClipdexError.__init__(self, "the library has no model yet; name the model the vectors come from")
        self.model = None


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


class UnknownEmbeddingFormat(InputFileError):
    """An embeddings file is neither .npy nor .parquet."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: embeddings come as .npy (with a list of their items) or .parquet")
        self.path = path


class ItemsListNeeded(InputFileError):
    """A .npy embeddings file was given without the list of items its rows belong to."""

    def __init__(self, path: str, column: str) -> None:
        super().__init__(f"{path}: a .npy file needs a list of items (one {column} per line, in row order)")
        self.path = path
        self.column = column  # what each line of the list is: "path" or "text"


class SavedModelError(ClipdexError):
    """A saved model's name is invalid, taken by an architecture, or its files are missing."""


class NameTaken(SavedModelError):
    """A name to save a model under is an open_clip architecture or a built-in model."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model name {name!r} is an open_clip architecture or a built-in model; choose another name")
        self.name = name


class ExecutorUnavailable(ClipdexError):
    """An executor's engine is not installed: `package` is missing, `extra` installs it."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"the {package} executor needs the {package!r} package; install {extra!r}")
