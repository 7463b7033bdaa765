"""Options shared by several commands, and turning them into library objects."""

from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer

from retrieval.errors import UnknownModel

if TYPE_CHECKING:
    from indexer.executor import Executor
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
        help="auto (fp16 on CUDA; on a CPU int8, then bf16 where the CPU has it natively), fp32, bf16, int8 (CPU, ONNX Runtime) "
        "or fp16. bf16 and int8 are used for indexing once a fidelity check on the first images accepts them. "
        "On search, auto and int8 encode text queries with the int8 ONNX text tower where its check accepted it; "
        "fp32 ranks exactly as torch fp32.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
# Scaling out (issue 16): `clipdex index --executor ray`.
ExecutorOpt = Annotated[
    str, typer.Option("--executor", help="local (decoder processes here) or ray (a Ray cluster; pip install 'clipdex[ray]').")
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option("--ray-address", help="Ray cluster address (auto, HOST:PORT, ray://HOST:10001); none starts a local Ray instance."),
]
PathMapOpt = Annotated[
    list[str], typer.Option("--path-map", help="LOCAL=REMOTE: the Ray nodes see LOCAL's files under REMOTE (repeatable).")
]


def open_library(library: Path | None, db: str | None, device: str = "auto", precision: str = "auto") -> Library:
    from retrieval.library import Library
    from indexer.model_spec import PRECISIONS

    if precision not in PRECISIONS:
        raise UnknownModel(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return Library.open(library, db=db, device=device, precision=precision)


@contextmanager
def executor_for(
    lib: Library, executor: str, address: str | None, path_map: list[str], batch_size: int
) -> Iterator[Executor | None]:
    """The executor --executor names (None: the library's local default), closed on exit."""
    from retrieval.errors import BadOption

    if executor not in ("local", "ray"):
        raise BadOption("executor", executor, "local or ray")
    if executor == "local":
        if address is not None or path_map:
            raise BadOption("ray_address" if address is not None else "path_map", address or path_map[0], "given with {executor} ray only")
        yield None
        return
    with lib.ray_executor(address, path_map, batch_size) as ex:
        yield ex


def model_spec(model: str | None, checkpoint: Path | None) -> ModelSpec | None:
    """The spec for --model/--checkpoint, or None for the library's own model."""
    from indexer.model_spec import ModelSpec

    if checkpoint is not None and model is None:
        raise UnknownModel("--checkpoint needs --model ARCH naming the architecture the weights belong to")
    return None if model is None else ModelSpec.parse(model, checkpoint)
