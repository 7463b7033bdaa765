"""Output helpers: JSON and tables on stdout, progress and notes on stderr.

Every text that comes from outside (a file name, a caption, a model name, an error
message quoting them) passes through `shown` before it reaches a terminal: a file
named `ESC ]52;c;… BEL` must not write the clipboard when `clipdex search` lists it.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import typer

if TYPE_CHECKING:
    from rich.progress import Progress


# C0 controls (tab and newline too), DEL, C1 controls, bidirectional marks, embeddings,
# overrides and isolates, and lone surrogates (a non-UTF-8 argument), which no terminal can show.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What JSON may carry raw but a terminal would act on: DEL, C1, bidi marks and lone surrogates
# (json.dumps already escapes C0). Only strings can hold them, so \uXXXX keeps the values exact.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(value: object) -> str:
    """`value` as text that prints literally on a terminal: control and bidi characters as \\x1b, \\u202e."""
    return _UNSAFE.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    typer.echo(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def echo(text: object) -> None:
    """One line of human-readable output on stdout, escaped by `shown`."""
    typer.echo(shown(text))


def note(message: object) -> None:
    """One line on stderr (a warning, a skipped file), escaped by `shown`."""
    typer.echo(shown(message), err=True)


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
