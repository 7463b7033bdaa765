"""The catalog's tables, its engine set-up (SQLite pragmas, IMMEDIATE writes) and migrations.

Only `indexer.catalog` uses this module; nothing else touches the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)

HEAD_REVISION = "0004"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

roots = Table(
    "roots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, nullable=False, unique=True),  # raw bytes: non-UTF-8 names round-trip
    Column("added_at", Float, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("fingerprint", String(300), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("pretrained", String(300)),
    Column("checkpoint", Text),
    Column("dim", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(8), nullable=False),  # image | text
    Column("path", LargeBinary, unique=True),  # images: raw path bytes
    Column("display_path", Text),  # images: the path as text, for output and globbing
    Column("text", Text),  # texts: the text itself
    Column("text_key", String(64), unique=True),  # texts: sha256 of the text
    Column("size", BigInteger),
    Column("mtime_ns", BigInteger),
    Column("content_hash", String(64)),
    Column("width", Integer),
    Column("height", Integer),
    Column("taken_at", Float),  # EXIF capture time, epoch seconds
    Column("date_key", Float),  # taken_at, falling back to mtime: what date filters use
    Column("camera", Text),
    Column("orientation", Integer),
    Column("status", String(8), nullable=False),  # indexed | skipped
    Column("reason", Text),
    Column("updated_at", Float, nullable=False),
    # Runs in a row whose decoder process crashed, hung or ran out of memory on this
    # version of the file (revision 0002); 0 once it decodes, fails for good or changes.
    Column("decode_tries", Integer, nullable=False, server_default="0"),
    # What the camera recorded beyond make and model (revision 0004, indexer.exif); NULL
    # where the file says nothing or says it wrongly.
    Column("lens", Text),
    Column("focal_mm", Float),
    Column("iso", Integer),
    Column("gps_lat", Float),  # degrees, south negative
    Column("gps_lon", Float),  # degrees, west negative
    Column("exif_version", Integer),  # the indexer.exif reader that filled these; NULL: not read yet
)
Index("ix_items_kind_status", items.c.kind, items.c.status)
Index("ix_items_hash", items.c.content_hash)
Index("ix_items_date", items.c.date_key)
Index("ix_items_focal", items.c.focal_mm)
Index("ix_items_iso", items.c.iso)
Index("ix_items_gps", items.c.gps_lat, items.c.gps_lon)

embeddings = Table(
    "embeddings",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float16 or float32, by length
)
Index("ix_embeddings_model", embeddings.c.model_id, embeddings.c.item_id)

# The fidelity guard's verdict per model and reduced precision (revision 0003): the first
# images a library indexed, encoded at fp32 and at the precision, and their cosines.
precision_checks = Table(
    "precision_checks",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("precision", String(16), primary_key=True),  # bf16 | int8
    Column("accepted", Integer, nullable=False),  # 1: images are encoded at this precision; 0: at fp32
    Column("mean_cosine", Float, nullable=False),
    Column("min_cosine", Float, nullable=False),
    Column("images", Integer, nullable=False),
    Column("seconds", Float, nullable=False),  # the guard's one-time cost
    Column("reason", Text),  # why it was refused, when it was
    Column("checked_at", Float, nullable=False),
)

# Every change to the vectors of (model, kind) appends a row here. A FAISS index
# records the last seq it reflects and catches up by replaying what came after.
changes = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("item_id", Integer, nullable=False),
    sqlite_autoincrement=True,
)
# Tags (revision 0004). A model's tags come from `clipdex tag` (zero-shot labels, with
# the label's score); folder tags have no model and no score.
tags = Table(
    "tags",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE")),  # NULL: a folder tag
    Column("label", Text, nullable=False),
    Column("score", Float),
)
Index("ix_tags_label", tags.c.label, tags.c.item_id)
Index("ix_tags_item", tags.c.item_id)

# Which version of each item a source has tagged, and with which label set, so
# `clipdex tag` re-tags only new or changed items, or everything when the labels change. `source` is a model id, or 0 for folder tags.
tagged = Table(
    "tagged",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("source", Integer, primary_key=True),
    Column("labels_key", String(64), nullable=False),
    Column("item_version", String(64)),  # the content hash tagged (labels), or a digest of the path (folders)
)

Index("ix_changes_model_kind_seq", changes.c.model_id, changes.c.kind, changes.c.seq)


def make_engine(url: str) -> Engine:
    """An engine with WAL, a busy timeout and BEGIN IMMEDIATE for writes on SQLite."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a writer waits on busy_timeout
        # instead of failing later with "database is locked".
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade(engine: Engine) -> None:
    """Bring the schema to HEAD_REVISION with Alembic (skipped when already there)."""
    with engine.connect() as conn:
        if "alembic_version" in inspect(conn).get_table_names():
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if current == HEAD_REVISION:
                return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        # Two processes opening a new library at once: the migration takes the write
        # lock up front (IMMEDIATE; an advisory lock on PostgreSQL), so the second one
        # waits and then finds the schema at head, instead of failing "database is locked".
        conn = conn.execution_options(immediate=True)
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('clipdex:migrate'))"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
