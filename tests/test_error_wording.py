"""Errors carry data; the layer that shows them words them.

The library's messages name no CLI flag or command (an HTTP client has none); the
CLI (`cli/error_lines.py`) words them with its flags, the server
(`retrieval/server/errors.py`) with its request parameters.
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import indexer.errors
import retrieval.errors
from cli.app import app
from cli.error_lines import error_line
from indexer.errors import (
    BadOption,
    ClipdexError,
    FiltersOnTexts,
    ItemsListNeeded,
    ModelNeeded,
    NameTaken,
    NoVectors,
    QueryError,
    QueryOptionError,
    UnknownEmbeddingFormat,
    WeightsChanged,
)
from indexer.models import ModelSpec
from retrieval.finetune_errors import CannotResume, ModelIncomplete, TrainingConfigError
from retrieval.server.errors import message_for, status_for
from retrieval.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
SPEC = ModelSpec("ViT-B-32", "openai", "/w/tuned.safetensors")
COMMANDS = "index|forget|add-texts|import|search|status|models|serve|finetune|eval|use|demo"
CLI_WORDS = re.compile(rf"(^|[\s(`])--[a-z]|clipdex ({COMMANDS})\b")


def cli_error(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    return result.stderr


def raised_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant inside a raise statement (f-string parts included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found += [(c.lineno, c.value) for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return found


def test_library_messages_name_no_cli_flag_or_command() -> None:
    offenders = []
    for package in ("indexer", "retrieval"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(("retrieval/server/", "retrieval/demo/")):
                continue  # the server words its own errors; the demo is a command of its own
            offenders += [f"{rel}:{n}: {s!r}" for n, s in raised_strings(path) if CLI_WORDS.search(s)]
    assert offenders == []


def test_every_typed_error_is_exported_where_users_import_them() -> None:
    defined = {n for n, v in vars(indexer.errors).items() if isinstance(v, type) and v.__module__ == "indexer.errors"}
    assert set(retrieval.errors.__all__) == defined
    assert all(getattr(retrieval.errors, n) is getattr(indexer.errors, n) for n in defined)


ERRORS = [
    BadOption("batch_size", 1, "at least 2"),
    QueryOptionError("top", 0, "at least 1"),
    TrainingConfigError("accum_steps", 9, "between 1 and {batch_size}"),
    FiltersOnTexts(),
    NoVectors(),
    NoVectors(SPEC),
    ModelNeeded(),
    ModelIncomplete(SPEC, 3, 0),
    WeightsChanged("clipdex-tiny@aaa", "clipdex-tiny@bbb"),
    NameTaken("ViT-B-32"),
    UnknownEmbeddingFormat("/x/v.csv"),
    ItemsListNeeded("/x/v.npy", "path"),
    CannotResume("/x/run.pt", is_missing=True),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_library_message_is_one_neutral_line_and_survives_pickling(error: ClipdexError) -> None:
    text = str(error)
    assert "\n" not in text and "--" not in text and "clipdex " not in text
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.__dict__) == (type(error), text, error.__dict__)


def test_each_layer_words_the_library_messages() -> None:
    assert [str(e) for e in ERRORS] == [
        "batch_size must be at least 2 (got 1)",
        "top must be at least 1 (got 0)",
        "accum_steps must be between 1 and batch_size (got 9)",
        "path and date filters apply to images; they cannot be used in a search of texts",
        "the library is empty: nothing has been indexed into it yet",
        "the library has no vectors from ViT-B-32:openai (tuned.safetensors); index it with that model first",
        "the library has no model yet; name the model the vectors come from",
        "3 images and 0 texts have no vector from ViT-B-32:openai (tuned.safetensors) yet; "
        "index the library with that model first",
        "the library's model clipdex-tiny@aaa no longer loads with the same weights (now clipdex-tiny@bbb); "
        "re-index the library with another model, or restore the original weights",
        "model name 'ViT-B-32' is an open_clip architecture or a built-in model; choose another name",
        "/x/v.csv: embeddings come as .npy (with a list of their items) or .parquet",
        "/x/v.npy: a .npy file needs a list of items (one path per line, in row order)",
        "nothing to resume: no checkpoint at /x/run.pt; start the run over without resuming",
    ]
    index = "`clipdex index --model ViT-B-32:openai --checkpoint /w/tuned.safetensors`"
    assert [error_line(e) for e in ERRORS] == [
        "--batch-size must be at least 2 (got 1)",
        "--top must be at least 1 (got 0)",
        "--accum-steps must be between 1 and --batch-size (got 9)",
        "path and date filters (--path, --after, --before) apply to images; they cannot be used with --texts",
        "the library is empty; run `clipdex index PATH` first",
        f"the library has no vectors from ViT-B-32:openai (tuned.safetensors); run {index} first",
        "the library has no model yet; name the model the vectors come from with --model",
        f"3 images and 0 texts have no vector from ViT-B-32:openai (tuned.safetensors) yet; run {index} first",
        "the library's model clipdex-tiny@aaa no longer loads with the same weights (now clipdex-tiny@bbb); "
        "re-index with `clipdex index --model NAME`, or restore the original weights",
        "model name 'ViT-B-32' is an open_clip architecture or a built-in model; choose another --name",
        "/x/v.csv: embeddings come as .npy (with --items) or .parquet",
        "/x/v.npy: a .npy file needs --items LIST (one path per line, in row order)",
        "nothing to resume: no checkpoint at /x/run.pt; run again without --resume",
    ]
    assert [(status_for(e), message_for(e)) for e in ERRORS[1:5]] == [
        (400, "parameter top must be at least 1 (got 0)"),
        (400, "parameter accum_steps must be between 1 and parameter batch_size (got 9)"),
        (400, "path and date filters (path, after, before) apply to images; they cannot be used with texts=true"),
        (404, "the library is empty: nothing has been indexed into it yet"),
    ]


@pytest.mark.parametrize(
    "changes, name, value",
    [({"batch_size": 1}, "batch_size", 1), ({"accum_steps": 3, "batch_size": 2}, "accum_steps", 3),
     ({"lr": 0.0}, "lr", 0.0), ({"weight_decay": -1.0}, "weight_decay", -1.0),
     ({"lock_image": True, "lock_text": True}, "lock_image", True), ({"precision": "fp8"}, "precision", "fp8")],
)
def test_a_bad_training_option_names_itself(changes: dict[str, object], name: str, value: object) -> None:
    with pytest.raises(TrainingConfigError) as caught:
        TrainConfig(**changes).check()  # type: ignore[arg-type]
    assert (caught.value.name, caught.value.value) == (name, value)


@pytest.mark.parametrize(
    "flags, line",
    [(["--batch-size", "1"], "--batch-size must be at least 2, as InfoNCE needs negatives (got 1)"),
     (["--accum-steps", "3", "--batch-size", "2"], "--accum-steps must be between 1 and --batch-size (got 3)"),
     (["--lock-image", "--lock-text"], "--lock-image must be off with --lock-text: together they leave nothing to train"),
     (["--wise-ft", "1.5"], "--wise-ft must be between 0 and 1 (got 1.5)")],
)
def test_the_cli_names_a_bad_training_option_by_its_flag(flags: list[str], line: str) -> None:
    assert cli_error("finetune", "pairs.csv", *flags) == f"error: {line}\n"


def test_a_bad_top_is_a_query_error_naming_the_option(tmp_path: Path) -> None:
    from retrieval.library import Library

    with Library.open(tmp_path / "lib") as lib:
        lib.index(model=ModelSpec.parse("clipdex-tiny"))
        with pytest.raises(QueryError) as caught:
            lib.search("x", top=0)
    assert isinstance(caught.value, QueryOptionError) and (caught.value.name, caught.value.value) == ("top", 0)


def test_an_import_into_an_empty_library_asks_for_its_model(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((1, 128), dtype=np.float32))
    (tmp_path / "items.txt").write_text("/x/a.jpg\n")
    line = cli_error("import", str(tmp_path / "v.npy"), "--items", str(tmp_path / "items.txt"))
    assert line == "error: the library has no model yet; name the model the vectors come from with --model\n"
    assert cli_error("import", str(tmp_path / "v.npy")) == (
        f"error: {tmp_path / 'v.npy'}: a .npy file needs --items LIST (one path per line, in row order)\n"
    )

