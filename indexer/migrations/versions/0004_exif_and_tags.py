"""Lens, focal length, ISO and GPS position of each photo; tags per model and folder.

Revision ID: 0004
Revises: 0002

The new item columns stay NULL, with `exif_version` NULL, for files indexed before:
the next `clipdex index` reads their EXIF again (headers only, no re-encoding).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("lens", sa.Text))
        batch.add_column(sa.Column("focal_mm", sa.Float))
        batch.add_column(sa.Column("iso", sa.Integer))
        batch.add_column(sa.Column("gps_lat", sa.Float))
        batch.add_column(sa.Column("gps_lon", sa.Float))
        batch.add_column(sa.Column("exif_version", sa.Integer))
    op.create_index("ix_items_focal", "items", ["focal_mm"])
    op.create_index("ix_items_iso", "items", ["iso"])
    op.create_index("ix_items_gps", "items", ["gps_lat", "gps_lon"])
    op.create_table(
        "tags",
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE")),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("score", sa.Float),
    )
    op.create_index("ix_tags_label", "tags", ["label", "item_id"])
    op.create_index("ix_tags_item", "tags", ["item_id"])
    op.create_table(
        "tagged",
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source", sa.Integer, primary_key=True),
        sa.Column("labels_key", sa.String(64), nullable=False),
        sa.Column("item_version", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("tagged")
    op.drop_table("tags")
    op.drop_index("ix_items_gps", "items")
    op.drop_index("ix_items_iso", "items")
    op.drop_index("ix_items_focal", "items")
    with op.batch_alter_table("items") as batch:
        for name in ("exif_version", "gps_lon", "gps_lat", "iso", "focal_mm", "lens"):
            batch.drop_column(name)
