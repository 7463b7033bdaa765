"""Database-level safety: typed errors for damaged or full catalogs and for URLs that
cannot be opened, passwords kept out of messages, integrity checks, and PostgreSQL's
cross-machine writer lock.

`indexer.catalog` uses this module (the library also asks it whether a URL parses).
SQLite and PostgreSQL report the same problems differently; here they become
`CatalogError` (damaged) and `DiskFull`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from indexer.errors import CatalogError, ClipdexError, DatabaseDriverMissing, DiskFull, LibraryBusy

# SQLite result codes and PostgreSQL SQLSTATEs that mean "damaged" or "full", not "busy".
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 10, 11, 13, 26
_FULL_BELOW_BYTES = 1 << 20  # an I/O error with less free space than this is a full disk
_PG_DISK_FULL = "53100"
_PG_LOCK_SPACE = 0x636C6970  # "clip": first key of clipdex's two-key advisory locks


# pip packages of the drivers SQLAlchemy's URLs name, by the module that failed to import.
_DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


def hide_password(url: str) -> str:
    """`url` as messages show it: its password (if any) as ***, also when it does not parse."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return re.sub(r"://[^@]*@", "://***@", url, count=1)  # user and password: the parser cannot tell them apart
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def is_url(url: str) -> bool:
    """Whether SQLAlchemy can parse `url` (it may still name an unknown backend)."""
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        return False
    return True


def url_error(e: Exception, shown_url: str) -> CatalogError:
    """The typed error for an engine SQLAlchemy refused to create: a URL that does not parse,
    an unknown backend, or a driver that is not installed (`e` is ArgumentError, ValueError or ImportError)."""
    if isinstance(e, ImportError):
        module = (e.name or "").split(".")[0] or str(e)
        return DatabaseDriverMissing(shown_url, module, _DRIVER_PACKAGES.get(module, module))
    if isinstance(e, NoSuchModuleError):
        backend = shown_url.partition("://")[0]
        return CatalogError(
            f"the catalog URL {shown_url} names a backend SQLAlchemy does not know ({backend}); "
            "use sqlite:///PATH/catalog.db or postgresql+psycopg://USER@HOST/DB"
        )
    return CatalogError(
        f"{shown_url!r} is not a database URL; write it as sqlite:///PATH/catalog.db or postgresql+psycopg://USER@HOST/DB"
    )


def translate(e: DBAPIError, url: str) -> ClipdexError | None:
    """The typed error for a damaged or full database, or None for any other failure."""
    code = getattr(e.orig, "sqlite_errorcode", None)
    state = getattr(e.orig, "sqlstate", None)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CatalogError(
            f"the catalog {url} is damaged ({reason(e)}). clipdex does not reset it: restore it from a backup, "
            "or move it away and index again to start a new library"
        )
    if code == _SQLITE_FULL or state == _PG_DISK_FULL or (_is_io_error(code) and _is_disk_full(e, url)):
        return DiskFull(
            f"cannot write the catalog {url}: the disk is full ({reason(e)}). Every batch committed before "
            "is kept; free some space and run the command again to resume"
        )
    return None


def _is_io_error(code: object) -> bool:
    return isinstance(code, int) and code & 0xFF == _SQLITE_IOERR


def _is_disk_full(e: DBAPIError, url: str) -> bool:
    """SQLite reports a full disk met while creating its -wal/-shm files as a plain I/O error."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return False
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < _FULL_BELOW_BYTES
    except OSError:
        return False


def reason(e: DBAPIError) -> str:
    """The driver's own first line of the error."""
    lines = str(e.orig).strip().splitlines()
    return lines[0] if lines else type(e.orig).__name__


def integrity_problems(engine: Engine, full: bool = False) -> list[str]:
    """SQLite's quick_check (or the slower full integrity_check) findings; [] when sound or not SQLite."""
    if engine.dialect.name != "sqlite":
        return []
    pragma = "integrity_check" if full else "quick_check"
    with engine.connect() as conn:
        rows = [str(r[0]) for r in conn.exec_driver_sql(f"PRAGMA {pragma}")]
    return [] if rows == ["ok"] else rows


@contextmanager
def advisory_lock(engine: Engine, name: str, holder_pid: int, host: str) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock named `name` for the block; no-op elsewhere.

    The session is tagged `clipdex:PID@HOST` so a refused writer can name the holder.
    The server drops the lock when the holder's connection dies, so a killed writer
    never leaves it behind. Raises LibraryBusy.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)
    args = {"a": _PG_LOCK_SPACE, "k": key}
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": f"clipdex:{holder_pid}@{host}"})
        taken = conn.execute(text("SELECT pg_try_advisory_lock(:a, :k)"), args).scalar()
        conn.commit()
        if not taken:
            raise _busy(conn, key)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:a, :k)"), args)
            conn.commit()


def _busy(conn: Connection, key: int) -> LibraryBusy:
    q = text(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :k"
    )
    name = conn.execute(q, {"a": _PG_LOCK_SPACE, "k": key % (1 << 32)}).scalar() or ""
    pid, _, host = str(name).removeprefix("clipdex:").partition("@")
    return LibraryBusy(int(pid) if pid.isdigit() else None, host or None)
