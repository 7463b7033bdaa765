"""`clipdex demo`: the offline tour of clipdex, with the built-in model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.render import note, shown


def demo(
    library: Annotated[
        Optional[Path], typer.Option("--library", help="Keep the demo library (and its pictures) here instead of a temporary folder.")
    ] = None,
    images: Annotated[int, typer.Option("--images", min=20, help="How many pictures to draw and index.")] = 200,
) -> None:
    """Draw a small photo world, index it with the built-in model, and search it (offline)."""
    from retrieval.demo.run import run_demo

    report = run_demo(library, images, note=note)
    typer.echo(f"indexed {report.images} pictures in {report.index_seconds:.1f}s ({shown(report.photos)})")
    titles = {"text": "text → images", "image": "image → similar images", "text-by-image": "image → captions"}
    for q in report.queries:
        typer.echo(f"\n{titles[q.kind]}: {shown(repr(q.query))}   (expected: {shown(q.expected)})")
        for label, score in q.results:
            typer.echo(f"  {score:.3f}  {shown(label)}" + ("   ✓" if label == q.expected else ""))
    recall = "  ".join(f"R@{k} {v:.2f}" for k, v in report.recall.items())
    typer.echo(f"\ntext → image over all {report.captions} captions: {recall}")
    if library is None:
        note("the demo library was temporary; keep one with --library DIR, then try: clipdex search 'a red circle' --library DIR")
