"""Options shared by several commands, and turning them into library objects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from retrieval.errors import UnknownModel

if TYPE_CHECKING:
    from retrieval.library import Library
    from indexer.model_spec import ModelSpec

LibraryOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--library",
        envvar="CLIPDEX_HOME",
        help="Library folder (default: $CLIPDEX_HOME, else the user data directory).",
        show_default=False,
    ),
]
DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", help="SQLAlchemy URL of the catalog; remembered by the library (default: SQLite inside it)."),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        help="open_clip model as NAME or NAME:PRETRAINED_TAG (default: the library's model). See `clipdex models`.",
    ),
]
CheckpointOpt = Annotated[
    Optional[Path],
    typer.Option("--checkpoint", help="Local weights (.safetensors or .pt state dict) for the --model architecture."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (fp16 on CUDA, bf16 on CPUs with native bf16, else int8), fp32, bf16, int8 (CPU, ONNX Runtime) "
        "or fp16. bf16 and int8 are used for indexing once a fidelity check on the first images accepts them.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def open_library(library: Path | None, db: str | None, device: str = "auto", precision: str = "auto") -> Library:
    from retrieval.library import Library
    from indexer.model_spec import PRECISIONS

    if precision not in PRECISIONS:
        raise UnknownModel(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return Library.open(library, db=db, device=device, precision=precision)


def model_spec(model: str | None, checkpoint: Path | None) -> ModelSpec | None:
    """The spec for --model/--checkpoint, or None for the library's own model."""
    from indexer.model_spec import ModelSpec

    if checkpoint is not None and model is None:
        raise UnknownModel("--checkpoint needs --model ARCH naming the architecture the weights belong to")
    return None if model is None else ModelSpec.parse(model, checkpoint)
