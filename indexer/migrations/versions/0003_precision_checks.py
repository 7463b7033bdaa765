"""Record the fidelity guard's verdict per model and reduced precision.

Revision ID: 0003
Revises: 0002

`precision_checks` holds, per model and precision (bf16, int8), whether the library's
first images encoded at that precision matched fp32 closely enough to index with it
(`indexer.precision_guard`), with the cosines, the number of images and the check's cost.
A catalog from before has no verdicts: the next run measures them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precision_checks",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("precision", sa.String(16), primary_key=True),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("mean_cosine", sa.Float, nullable=False),
        sa.Column("min_cosine", sa.Float, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("checked_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("precision_checks")
