"""`clipdex tag`: tags from labels (zero-shot) and from folder names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CheckpointOpt, DbOpt, DeviceOpt, JsonOpt, LibraryOpt, ModelOpt, PrecisionOpt, model_spec, open_library
from cli.render import echo, note, print_json


def tag(
    labels: Annotated[
        Optional[Path],
        typer.Option("--labels", help="A file of labels, one a line ([name] lines start a set of alternatives; # comments); "
                     "default: the starter set."),
    ] = None,
    folder_tags: Annotated[bool, typer.Option("--folder-tags", help="Tag each photo with its folders' names.")] = False,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Tag photos with the labels that fit them (new and changed photos only), and with folder names."""
    from retrieval.tagging import STARTER_LABELS, read_label_sets

    names = read_label_sets(labels.read_text(encoding="utf-8")) if labels else ([] if folder_tags else [list(STARTER_LABELS)])
    if labels and not names:
        note(f"warning: {labels} holds no labels")
    with open_library(library, db, device, precision) as lib:
        lib.notify = note
        report = lib.tag(names, folder_tags=folder_tags, model=model_spec(model, checkpoint))
    if as_json:
        print_json(report.to_dict())
        return
    if names:
        how = "new label sets: every photo" if report.calibrated else "same label sets"
        echo(f"{report.labels} labels in {report.sets} sets ({how}): tagged {report.tagged}, unchanged {report.unchanged}, "
             f"waiting for vectors {report.waiting}")  # fmt: skip
    if folder_tags:
        echo(f"folder tags: tagged {report.folder_tagged}, unchanged {report.folder_unchanged}")
