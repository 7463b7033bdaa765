"""Drawing training progress on stderr: a rich bar on a terminal, a line per validation otherwise."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import typer

from cli.render import rich_progress


@contextmanager
def train_progress() -> Iterator[Callable[[Any], None]]:
    """A callback for TrainProgress updates (step, total_steps, loss, pairs_per_s, val_score)."""
    if not sys.stderr.isatty():

        def line(p: Any) -> None:
            if p.val_score is not None:
                typer.echo(_text(p), err=True)

        yield line
        return
    with rich_progress("training", transient=False) as bar:
        task = bar.add_task("training", total=None, info="")

        def update(p: Any) -> None:
            bar.update(task, completed=p.step, total=p.total_steps, info=_text(p, with_step=False))

        yield update


def _text(p: Any, with_step: bool = True) -> str:
    step = f"step {p.step}/{p.total_steps}  " if with_step else ""
    val = f"  val R@1 {p.val_score:.3f}" if p.val_score is not None else ""
    return f"{step}loss {p.loss:.3f}  {p.pairs_per_s:.0f} pairs/s{val}"
