"""`clipdex duplicates`: exact copies, near copies and bursts, grouped, with a suggested keeper each."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

import typer

from cli.options import CheckpointOpt, DbOpt, JsonOpt, LibraryOpt, ModelOpt, model_spec, open_library
from cli.render import echo, note, print_json

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class TierChoice(str, Enum):
    exact = "exact"
    near = "near"
    burst = "burst"


def duplicates(
    window: Annotated[str, typer.Option("--window", help="Burst: EXIF capture times at most this far apart (10s, 2m, 1h).")] = "10s",
    tier: Annotated[TierChoice, typer.Option("--tier", help="Group up to this tier: exact, near (exact and near) or burst (all).")] = TierChoice.burst,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Group copies, near copies and burst shots, each with a suggested keeper. Never deletes anything."""
    from retrieval.duplicates import DuplicateConfig

    config = DuplicateConfig(window_s=parse_window(window), tier=tier.value)
    with open_library(library, db) as lib:
        report = lib.duplicates(config, model=model_spec(model, checkpoint))
    if as_json:
        print_json(report.to_dict())
        return
    if not report.groups:
        note(f"no duplicates among {report.photos} photos")
    for g in report.groups:
        echo(f"{g.tier} group of {len(g.members)}: keep {g.members[0].path} ({g.why})")
        for m in g.members:
            size = f"{m.width}x{m.height}" if m.width else "?x?"
            echo(f"  {m.match:6s}  {m.path}  {size}  {m.size if m.size is not None else '?'} bytes  {m.taken_at or '-'}")


def parse_window(text: str) -> float:
    """Seconds in '10s', '2m', '1h' or '10'; a malformed window is a command-line error."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 10s, 2m or 1h", param_hint="--window")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]
