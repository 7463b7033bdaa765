"""How the CLI words the library's typed errors: with the flags and commands that fix them.

The library's messages are neutral (an HTTP client has no `--model` flag). An error
that a flag or a command fixes carries its data (the option, the model, the path),
and `error_line` words it from that data; every other error keeps its message.
`cli/app.py` prints the line; the server words the same errors in
`retrieval/server/errors.py`.
"""

from __future__ import annotations

from typing import Any, Callable

from retrieval.errors import (
    BadOption,
    ClipdexError,
    ExecutorUnavailable,
    FiltersOnTexts,
    ItemsListNeeded,
    ModelNeeded,
    NameTaken,
    NoVectors,
    UnknownEmbeddingFormat,
    UnknownModelName,
    WeightsUnreachable,
    WeightsChanged,
)
from retrieval.finetune_errors import CannotResume, ModelIncomplete


def error_line(e: ClipdexError) -> str:
    """The message of `e` for a terminal user: the most specific wording in `WORDING`, else str(e)."""
    for cls in type(e).__mro__:
        word = WORDING.get(cls)
        if word is not None:
            return word(e)
    return str(e)


def flag(option: str) -> str:
    """The CLI flag of a library option: batch_size -> --batch-size."""
    return "--" + option.replace("_", "-")


def index_command(model: Any) -> str:
    """The `clipdex index` command that embeds the library with `model` (a ModelSpec)."""
    given = f"{model.name}:{model.pretrained}" if model.pretrained else model.name
    return f"clipdex index --model {given}" + (f" --checkpoint {model.checkpoint}" if model.checkpoint else "")


def _no_vectors(e: NoVectors) -> str:
    if e.model is None:
        return "the library is empty; run `clipdex index PATH` first"
    return f"the library has no vectors from {e.model.label}; run `{index_command(e.model)}` first"


def _model_incomplete(e: ModelIncomplete) -> str:
    return (
        f"{e.images} images and {e.texts} texts have no vector from {e.model.label} yet; "
        f"run `{index_command(e.model)}` first"
    )


def _cannot_resume(e: CannotResume) -> str:
    if e.is_missing:
        return f"nothing to resume: no checkpoint at {e.path}; run again without --resume"
    return f"checkpoint {e.path} was made with other data or settings; run again without --resume to start over"


# Looked up along the error's class hierarchy: the most specific entry wins.
WORDING: dict[type[ClipdexError], Callable[[Any], str]] = {
    BadOption: lambda e: e.worded(flag),
    FiltersOnTexts: lambda e: "path and date filters (--path, --after, --before) apply to images; "
    "they cannot be used with --texts",
    NoVectors: _no_vectors,
    ExecutorUnavailable: lambda e: f"--executor {e.package} needs {e.package}: pip install '{e.extra}'",
    WeightsUnreachable: lambda e: f"cannot load {e.label}: {e.why}; connect to the network once, populate the "
    "Hugging Face cache (HF_HOME), or pass --checkpoint FILE; to try clipdex offline use --model clipdex-tiny",
    UnknownModelName: lambda e: f"unknown model {e.name!r}; `clipdex models` lists the available ones",
    ModelNeeded: lambda e: "the library has no model yet; name the model the vectors come from with --model",
    ModelIncomplete: _model_incomplete,
    WeightsChanged: lambda e: f"the library's model {e.recorded} no longer loads with the same weights "
    f"(now {e.now}); re-index with `clipdex index --model NAME`, or restore the original weights",
    NameTaken: lambda e: f"model name {e.name!r} is an open_clip architecture or a built-in model; "
    "choose another --name",
    UnknownEmbeddingFormat: lambda e: f"{e.path}: embeddings come as .npy (with --items) or .parquet",
    ItemsListNeeded: lambda e: f"{e.path}: a .npy file needs --items LIST (one {e.column} per line, in row order)",
    CannotResume: _cannot_resume,
}
