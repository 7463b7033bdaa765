"""LIBRARY/server.json: which `clipdex serve` process serves this library, so a search can ask it.

`clipdex serve` writes the record once it is ready (atomically) and removes it when it
stops; `clipdex search` reads it (`live_record`) before it imports anything heavy, and
sends its query to the server instead of loading the model, the catalog and the index.
A record is only a hint: one whose process is gone (a killed server), that was
written on another machine (a library on a network share), or that names another
catalog than the library's config.json is ignored.

Standard library only: this module is imported on the path that must stay cheap.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

FILENAME = "server.json"
_VERSION = 1

CATALOG_HEADER = "X-Clipdex-Catalog"  # a search answer names the catalog it searched: a reused pid or port is not this server


@dataclass(frozen=True)
class ServerRecord:
    """What a client needs to know about a running server before it sends a query."""

    url: str  # http://HOST:PORT/, an address this machine reaches it at
    pid: int
    machine: str  # socket.gethostname() of the server's machine: a pid means nothing elsewhere
    catalog_id: str
    token_required: bool
    model: str | None  # the server's --model, None for the library's active model

    def is_live(self) -> bool:
        """Whether the process that wrote the record still runs on this machine."""
        if self.machine != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, run by another user
        return True


def write_record(home: Path, record: ServerRecord) -> None:
    """Write the record atomically (a reader sees the old file or the new one); OSError if the folder is not writable."""
    path = home / FILENAME
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps({"version": _VERSION, **asdict(record)}, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_record(home: Path, pid: int) -> None:
    """Remove the record if process `pid` wrote it (a later server over the same library keeps its own)."""
    found = read_record(home)
    if found is not None and found.pid == pid:
        (home / FILENAME).unlink(missing_ok=True)


def read_record(home: Path) -> ServerRecord | None:
    """The record as written, or None when there is none or it cannot be read."""
    try:
        data = json.loads((home / FILENAME).read_text())
        if data.pop("version", None) != _VERSION:
            return None
        record = ServerRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
    typed = (
        isinstance(record.url, str) and isinstance(record.pid, int) and isinstance(record.machine, str)
        and isinstance(record.catalog_id, str) and isinstance(record.token_required, bool)
        and isinstance(record.model, (str, type(None)))
    )
    return record if typed else None


def live_record(home: Path) -> ServerRecord | None:
    """The record of a server that runs now over this library's catalog, else None."""
    record = read_record(home)
    if record is None or not record.is_live() or record.catalog_id != _catalog_id(home):
        return None
    return record


def _catalog_id(home: Path) -> str | None:
    """The catalog id in the library's config.json (read directly: its reader imports SQLAlchemy)."""
    try:
        config = json.loads((home / "config.json").read_text())
    except (OSError, ValueError):
        return None
    found = config.get("catalog_id") if isinstance(config, dict) else None
    return found if isinstance(found, str) else None
