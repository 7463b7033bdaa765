"""Commands that change a library: index, forget, add-texts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import (
    CheckpointOpt,
    DbOpt,
    DeviceOpt,
    ExecutorOpt,
    PathMapOpt,
    RayAddressOpt,
    executor_for,
    JsonOpt,
    LibraryOpt,
    ModelOpt,
    PrecisionOpt,
    model_spec,
    open_library,
)
from cli.render import echo, note, print_json, progress_bar


def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Folders or files to index; none rescans every root.")] = None,
    exclude: Annotated[list[str], typer.Option("--exclude", help="Skip paths or names matching GLOB (repeatable).")] = [],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=0, help="Images per encoder batch and commit (0: sized for the device).")] = 0,
    library: LibraryOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    path_map: PathMapOpt = [],
) -> None:
    """Index photo folders: new, changed, moved and deleted files are detected."""
    spec = model_spec(model, checkpoint)
    with open_library(library, db, device, precision) as lib, progress_bar("indexing") as progress:
        with executor_for(lib, executor, ray_address, path_map, batch_size) as ex:
            size = 0 if ex is not None else batch_size
            report = lib.index(paths or None, model=spec, exclude=exclude, batch_size=size, progress=progress, executor=ex)
    for fingerprint, where in report.devices.items():
        note(f"{fingerprint} ran on {where}")
    for root in report.missing_roots:
        note(f"warning: root {root} is missing (unmounted?); its items are kept")
    for path, reason in report.problems:
        note(f"warning: {path}: {reason}")
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(
        f"added {report.added}, updated {report.updated}, removed {report.removed}, renamed {report.renamed}, "
        f"skipped {report.skipped}, encoded {report.encoded} in {report.seconds:.1f}s"
    )
    if report.skipped:
        note("see the skipped files and why with `clipdex status --errors`")


def forget(
    path: Annotated[Path, typer.Argument(help="A root folder to remove, with its items.")],
    library: LibraryOpt = None,
    db: DbOpt = None,
) -> None:
    """Forget a root folder and remove its items from the library (files are untouched)."""
    with open_library(library, db) as lib:
        removed = lib.forget(path)
    echo(f"forgot {path}: removed {removed} items")


def add_texts(
    file: Annotated[Path, typer.Argument(help=".txt (one per line), .csv/.tsv (a 'text' column) or .jsonl ('text').")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Load texts (captions, labels, descriptions) to find the ones that best describe a photo."""
    with open_library(library, db, device, precision) as lib:
        report = lib.add_texts(file, model=model_spec(model, checkpoint))
    for line, reason in report.problems:
        note(f"warning: {file}:{line}: {reason}; row skipped")
    if as_json:
        print_json(report.to_dict())
    else:
        typer.echo(f"added {report.added} texts ({report.duplicates} already present), encoded {report.encoded}")


def import_embeddings(
    file: Annotated[Path, typer.Argument(help="A .npy matrix (with --items) or a .parquet table (path|text, embedding).")],
    items: Annotated[Optional[Path], typer.Option("--items", help="For .npy: one image path (or text) per line.")] = None,
    texts: Annotated[bool, typer.Option("--texts", help="The items are texts, not image paths.")] = False,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import embeddings computed elsewhere, with their image paths or texts."""
    from indexer.embedding_files import read_embeddings

    kind = "text" if texts else "image"
    names, vectors = read_embeddings(file, items, kind)
    with open_library(library, db) as lib:
        report = lib.import_embeddings(names, vectors, kind=kind, model=model_spec(model, checkpoint))
    if as_json:
        print_json(report.to_dict())
    else:
        echo(f"imported {report.added} new and {report.replaced} existing {kind}s for {report.model}")
