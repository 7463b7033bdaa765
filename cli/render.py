"""Output helpers: JSON and tables on stdout, progress and notes on stderr."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import typer

if TYPE_CHECKING:
    from rich.progress import Progress


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def note(message: str) -> None:
    typer.echo(message, err=True)


def rich_progress(label: str, *, transient: bool) -> Progress:
    """A rich bar on stderr: the label, the bar, done/total, a free `info` field, the time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=transient)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[Any], None] | None]:
    """A rich progress bar (items/s, ETA) on stderr when it is a terminal; else no callback."""
    if not sys.stderr.isatty():
        yield None
        return
    with rich_progress(label, transient=True) as bar:
        task = bar.add_task(label, total=None, info="")

        def update(p: Any) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=p.done, total=p.total or None, info=f"{speed:.1f} img/s" if speed else "")

        yield update
