"""The first catalog schema: items, models, embeddings, roots, the change log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "roots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(300), nullable=False, unique=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("pretrained", sa.String(300)),
        sa.Column("checkpoint", sa.Text),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("path", sa.LargeBinary, unique=True),
        sa.Column("display_path", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("text_key", sa.String(64), unique=True),
        sa.Column("size", sa.BigInteger),
        sa.Column("mtime_ns", sa.BigInteger),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("taken_at", sa.Float),
        sa.Column("date_key", sa.Float),
        sa.Column("camera", sa.Text),
        sa.Column("orientation", sa.Integer),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_items_kind_status", "items", ["kind", "status"])
    op.create_index("ix_items_hash", "items", ["content_hash"])
    op.create_index("ix_items_date", "items", ["date_key"])
    op.create_table(
        "embeddings",
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_embeddings_model", "embeddings", ["model_id", "item_id"])
    op.create_table(
        "changes",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("item_id", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_changes_model_kind_seq", "changes", ["model_id", "kind", "seq"])


def downgrade() -> None:
    for table in ("changes", "embeddings", "items", "models", "roots", "meta"):
        op.drop_table(table)
