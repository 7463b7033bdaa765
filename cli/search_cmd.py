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
    from retrieval.duplicates import DuplicateConfig
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
    camera: Annotated[Optional[str], typer.Option("--camera", help="Camera make or model contains TEXT (any case).")] = None,
    lens: Annotated[Optional[str], typer.Option("--lens", help="Lens make or model contains TEXT (any case).")] = None,
    focal: Annotated[Optional[str], typer.Option("--focal", help="Focal length in mm: MIN..MAX, MIN.., ..MAX or N.")] = None,
    iso: Annotated[Optional[str], typer.Option("--iso", help="ISO: MIN..MAX, MIN.., ..MAX or N.")] = None,
    near: Annotated[Optional[str], typer.Option("--near", help="Taken near LAT,LON (decimal degrees; S and W negative).")] = None,
    within: Annotated[Optional[str], typer.Option("--within", help="Distance for --near: 5km (default), 800m.")] = None,
    has_gps: Annotated[bool, typer.Option("--has-gps", help="Only photos with a GPS position.")] = False,
    tag: Annotated[list[str], typer.Option("--tag", help="Only photos with this tag (repeat: all of them).")] = [],
    sort: Annotated[Sort, typer.Option("--sort", help="Order the top results by score or by date (newest first).")] = Sort.score,
    texts: Annotated[bool, typer.Option("--texts", help="Search the text collection instead of the images.")] = False,
    collapse: Annotated[bool, typer.Option("--collapse", help="Show each duplicate group (see `clipdex duplicates`) as its keeper only.")] = False,
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

    filters = search_filter(
        path=path, after=after, before=before, min_score=min_score, camera=camera, lens=lens, focal=focal, iso=iso,
        near=near, within=within, has_gps=has_gps, tag=tag,
    )
    extra = [(k, v) for k, v in (("camera", camera), ("lens", lens), ("focal", focal), ("iso", iso), ("near", near),
                                 ("within", within)) if v is not None]
    extra += [("tag", t) for t in tag] + [("has_gps", "true")] * has_gps + [("collapse", "true")] * collapse
    request = SearchRequest(
        query, force_image=image, add=tuple(add), sub=tuple(sub), top=top, path=path, after=after, before=before,
        min_score=min_score, sort=sort.value, texts=texts, extra=tuple(extra),
    )
    may_delegate = not local and (model, checkpoint, db, device, precision) == (None, None, None, "auto", "auto")
    found = search_on_server(library_home(library), request) if may_delegate else None  # before numpy is imported
    if found is None:
        with open_library(library, db, device, precision) as lib:
            lib.notify = note
            results = lib.search(
                query, add=add, sub=sub, top=top, filters=filters, sort=sort.value, texts=texts,
                model=model_spec(model, checkpoint), force_image=image, collapse=_collapse(collapse),
            )
        found = [r.to_dict() for r in results]
    show(found, as_json)


def show(results: list[dict[str, object]], as_json: bool) -> None:
    """Results as JSON, or one line each: score, path (or text), date, tags."""
    if as_json:
        print_json(results)
        return
    if not results:
        note("no results")
    for d in results:
        label = d.get("path", d.get("text"))
        when = f"  {d['taken_at']}" if d.get("taken_at") else ""
        tags = f"  [{', '.join(d['tags'])}]" if d.get("tags") else ""  # type: ignore[arg-type]
        echo(f"{d['score']:.4f}  {label}{when}{tags}")


def search_filter(
    path: str | None = None, after: str | None = None, before: str | None = None, min_score: float | None = None,
    camera: str | None = None, lens: str | None = None, focal: str | None = None, iso: str | None = None,
    near: str | None = None, within: str | None = None, has_gps: bool = False, tag: list[str] | None = None,
) -> SearchFilter:
    """The filter options, read by the parser the server uses too; a bad value is named by its flag."""
    from retrieval.query import InvalidFilter, SearchFilter

    try:
        return SearchFilter.parse(
            path=path, after=after, before=before, min_score=min_score, camera=camera, lens=lens, focal=focal,
            iso=iso, near=near, within=within, has_gps=has_gps, tag=tag,
        )
    except InvalidFilter as e:
        raise e.renamed("--" + e.name.replace("_", "-")) from None


def _collapse(on: bool) -> DuplicateConfig | None:
    from retrieval.duplicates import DuplicateConfig

    return DuplicateConfig() if on else None
