"""`clipdex search`: text→image, image→image, and (with --texts) →text search."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.options import (
    CheckpointOpt,
    DbOpt,
    DeviceOpt,
    JsonOpt,
    LibraryOpt,
    ModelOpt,
    PrecisionOpt,
    model_spec,
    open_library,
)
from cli.render import echo, note, print_json

if TYPE_CHECKING:
    from retrieval.query import SearchFilter


class Sort(str, Enum):
    score = "score"
    date = "date"


def search(
    query: Annotated[str, typer.Argument(help="Text, or the path of an image; optionally weighted as W:TERM.")],
    image: Annotated[bool, typer.Option("--image", help="Treat QUERY as an image file.")] = False,
    add: Annotated[list[str], typer.Option("--add", help="Add a term (text or image, W:TERM).")] = [],
    sub: Annotated[list[str], typer.Option("--sub", help="Subtract a term (text or image, W:TERM).")] = [],
    top: Annotated[int, typer.Option("--top", min=1, help="Number of results.")] = 10,
    path: Annotated[Optional[str], typer.Option("--path", help="Only paths matching GLOB (* spans folders).")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="Taken on or after DATE (ISO 8601).")] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="Taken before DATE (ISO 8601).")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Only results scoring at least S.")] = None,
    sort: Annotated[Sort, typer.Option("--sort", help="Order the top results by score or by date (newest first).")] = Sort.score,
    texts: Annotated[bool, typer.Option("--texts", help="Search the text collection instead of the images.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Search in this process even when `clipdex serve` runs over the library.")
    ] = False,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Find photos by describing them or by showing an example photo."""
    from retrieval.delegation import SearchRequest, search_on_server
    from retrieval.library_config import library_home

    filters = search_filter(path=path, after=after, before=before, min_score=min_score)
    request = SearchRequest(
        query, force_image=image, add=tuple(add), sub=tuple(sub), top=top, path=path, after=after, before=before,
        min_score=min_score, sort=sort.value, texts=texts,
    )
    may_delegate = not local and (model, checkpoint, db, device, precision) == (None, None, None, "auto", "auto")
    found = search_on_server(library_home(library), request) if may_delegate else None  # before numpy is imported
    if found is None:
        with open_library(library, db, device, precision) as lib:
            lib.notify = note
            results = lib.search(
                query, add=add, sub=sub, top=top, filters=filters, sort=sort.value, texts=texts,
                model=model_spec(model, checkpoint), force_image=image,
            )
        found = [r.to_dict() for r in results]
    show(found, as_json)


def show(results: list[dict[str, object]], as_json: bool) -> None:
    """Results as JSON, or one line each: score, path (or text), date."""
    if as_json:
        print_json(results)
        return
    if not results:
        note("no results")
    for d in results:
        label = d.get("path", d.get("text"))
        when = f"  {d['taken_at']}" if d.get("taken_at") else ""
        echo(f"{d['score']:.4f}  {label}{when}")


def search_filter(path: str | None, after: str | None, before: str | None, min_score: float | None) -> SearchFilter:
    """The filter options, read by the parser the server uses too; a bad value is named by its flag."""
    from retrieval.query import InvalidFilter, SearchFilter

    try:
        return SearchFilter.parse(path=path, after=after, before=before, min_score=min_score)
    except InvalidFilter as e:
        raise e.renamed("--" + e.name.replace("_", "-")) from None
