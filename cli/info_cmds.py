"""Read-only commands: status and models."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.options import DbOpt, JsonOpt, LibraryOpt, open_library
from cli.render import echo, print_json, shown


def status(
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    library: LibraryOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what the library holds: counts, roots, models, and the index's state."""
    with open_library(library, db) as lib:
        st = lib.status(errors=errors)
    if as_json:
        print_json(st.to_dict())
        return
    index = st.index
    sync = "in sync" if index["in_sync"] else "out of date (rebuilt on next search)"
    lines = [
        f"library   {shown(st.home)}",
        f"images    {st.images} indexed, {st.skipped} skipped",
        f"texts     {st.texts}",
        f"index     {index['type']}, {index['vectors']} vectors, {_mb(index['memory_bytes'])} in memory, {sync}",
        f"on disk   {_mb(st.size_bytes)}",
        f"model     {shown(st.active_model or 'none yet')}",
    ]
    lines += [f"root      {shown(r['path'])}" + ("" if r["exists"] else "  (missing)") for r in st.roots]
    for m in st.models:
        lines.append(f"  {'*' if m['active'] else ' '} {shown(m['name'])}  {m['images']} images, {m['texts']} texts  [{shown(m['fingerprint'])}]")
        lines += _precision_lines(m)
    typer.echo("\n".join(lines))
    for e in st.errors or []:
        echo(f"skipped   {e['path']}: {e['reason']}")


def _precision_lines(model: dict[str, Any]) -> list[str]:
    """The precision images are indexed at, and the fidelity guard's verdicts."""
    lines = [f"      images encoded at {model['precision']}"]
    for c in model["precision_checks"]:
        verdict = "accepted" if c["accepted"] else "refused"
        lines.append(
            f"      guard {c['precision']}: {verdict}, cosine to fp32 mean {c['mean_cosine']:.4f} / min {c['min_cosine']:.4f} "
            f"on {c['images']} images ({c['seconds']:.1f} s)" + (f": {c['reason']}" if c["reason"] and c["images"] == 0 else "")
        )
    return lines


def models(library: LibraryOpt = None, as_json: JsonOpt = False) -> None:
    """List the built-in models, those saved in the library, and the architectures with their pretrained tags (use as NAME:TAG)."""
    from indexer.models import DEFAULT_MODEL, list_models
    from retrieval.library import library_home

    listing = list_models(library_home(library))
    if as_json:
        rows = [{"name": m.name, "tags": list(m.tags), "source": m.source, "arch": m.arch} for m in listing]
        print_json({"default": DEFAULT_MODEL, "models": rows})
        return
    typer.echo(f"default: {DEFAULT_MODEL}")
    for m in listing:
        if m.arch is not None:
            where = "built in, offline" if m.source == "built-in" else "saved in this library"
            typer.echo(f"{m.name}  ({where}; architecture {m.arch})")
        else:
            typer.echo(f"{m.name}: {', '.join(m.tags)}" if m.tags else m.name)


def _mb(n: object) -> str:
    return f"{int(n) / 1e6:.1f} MB" if isinstance(n, (int, float)) else "?"
