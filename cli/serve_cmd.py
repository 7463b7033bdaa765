"""`clipdex serve`: the web page and HTTP API."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.options import CheckpointOpt, DbOpt, DeviceOpt, LibraryOpt, ModelOpt, model_spec
from cli.render import note


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs a --token of 16+ characters.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token", envvar="CLIPDEX_TOKEN", help="Require this secret on every request (prefer $CLIPDEX_TOKEN)."
        ),
    ] = None,
    allow_host: Annotated[
        list[str],
        typer.Option("--allow-host", help="Also answer requests for this Host name, e.g. behind a proxy (repeatable)."),
    ] = [],
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest photo upload, in MB.")] = 20,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Serve a search page and an HTTP API (schema at /openapi.json) until Ctrl-C."""
    from retrieval.server import ServerSettings, serve as run_server
    from retrieval.server.settings import MB

    settings = ServerSettings(
        host=host, port=port, token=token or None, allow_hosts=tuple(allow_host),
        max_upload_bytes=max_upload_mb * MB, model=model_spec(model, checkpoint),
    )
    ready = lambda url: note(f"clipdex: serving {url}  (Ctrl-C stops)")  # noqa: E731
    run_server(settings, library, db=db, device=device, on_ready=ready)
