"""A library's config.json: where its folder is, which catalog database it uses, and that catalog's id.

The id is recorded when a catalog is first opened, so a catalog that later turns out
empty or different is refused instead of silently started over (see `Catalog`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from indexer.errors import CatalogError


@dataclass
class LibraryConfig:
    """The settings in a library folder's config.json (absent keys take their defaults)."""

    home: Path
    values: dict[str, object]

    @classmethod
    def read(cls, home: Path) -> LibraryConfig:
        """The config of the library at `home`; raises CatalogError when config.json is damaged."""
        return cls(home, _read_config(home / "config.json"))

    def choose_db(self, db: str | None) -> None:
        """Remember `db` (a SQLAlchemy URL) as the catalog's database; None keeps the recorded one."""
        if db is not None and self.values.get("db") != db:
            self.values["db"] = db
            self.values.pop("catalog_id", None)  # another database: a catalog of its own

    @property
    def catalog_url(self) -> str:
        """The catalog's database: the recorded URL, else catalog.db inside the library."""
        return str(self.values.get("db") or f"sqlite:///{self.home / 'catalog.db'}")

    @property
    def catalog_id(self) -> str | None:
        """The id of the catalog this library was indexed into, once recorded."""
        found = self.values.get("catalog_id")
        return found if isinstance(found, str) else None

    def record_catalog_id(self, catalog_id: str) -> None:
        """Record the catalog's id in config.json (atomically) if it is not recorded yet."""
        if self.values.get("catalog_id") == catalog_id:
            return
        self.values["catalog_id"] = catalog_id
        try:
            _write_config(self.home / "config.json", self.values)
        except OSError:
            pass  # a full or read-only disk: the id is recorded on a later open


def library_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The library folder: `home`, else $CLIPDEX_HOME, else the user data dir (not created here)."""
    return Path(home or os.environ.get("CLIPDEX_HOME") or platformdirs.user_data_dir("clipdex")).expanduser()


def _read_config(path: Path) -> dict[str, object]:
    from indexer import db_guard  # SQLAlchemy: not imported by `library_home`, which a delegated search calls

    try:
        config = json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path} is damaged ({e}); fix or delete it (its db setting names the catalog)") from None
    if not isinstance(config, dict):
        raise CatalogError(f"{path} is damaged (not a JSON object); fix or delete it")
    db = config.get("db")
    if db not in (None, "") and not (isinstance(db, str) and db_guard.is_url(db)):  # "": the default catalog
        value = repr(db_guard.hide_password(db)) if isinstance(db, str) else f"a JSON {type(db).__name__}"
        raise CatalogError(
            f"{path}: its db setting ({value}) is not a database URL such as postgresql+psycopg://USER@HOST/DB; "
            "fix it, or remove it to use the catalog.db inside the library"
        )
    return config


def _write_config(path: Path, config: dict[str, object]) -> None:
    """Replace config.json atomically: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
