"""The `clipdex` command: a thin typer layer over the library.

Commands import the library lazily, so `clipdex --help` does not load torch. Every
library error reaches `_App.invoke`, the one place that turns it into a stderr
line and an exit code, worded for the terminal by `cli/error_lines.py`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import typer
import typer.core

from cli import demo_cmd, duplicates_cmd, info_cmds, search_cmd, serve_cmd, tag_cmd, train_cmds, write_cmds
from cli.error_lines import error_line
from cli.render import note
from retrieval.errors import ClipdexError

EXIT_ERROR = 1


class _App(typer.core.TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClipdexError as e:
            note(f"error: {error_line(e)}")
            raise typer.Exit(EXIT_ERROR) from None
        except OSError as e:
            name = getattr(e, "filename", None)
            where = f" {os.fsdecode(name)}" if isinstance(name, (str, bytes)) and name else ""
            note(f"error:{where} {e.strerror or e}")
            raise typer.Exit(EXIT_ERROR) from None


app = typer.Typer(
    cls=_App,
    help="clipdex: search your photos by describing them, or by showing an example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("index")(write_cmds.index)
app.command("forget")(write_cmds.forget)
app.command("add-texts")(write_cmds.add_texts)
app.command("import")(write_cmds.import_embeddings)
app.command("search")(search_cmd.search)
app.command("status")(info_cmds.status)
app.command("models")(info_cmds.models)
app.command("serve")(serve_cmd.serve)
app.command("finetune")(train_cmds.finetune)
app.command("eval")(train_cmds.evaluate)
app.command("use")(train_cmds.use)
app.command("demo")(demo_cmd.demo)
app.command("tag")(tag_cmd.tag)
app.command("duplicates")(duplicates_cmd.duplicates)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
