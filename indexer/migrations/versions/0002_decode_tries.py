"""Count a file's decoder crashes, hangs and memory kills, so it is retried a bounded number of times.

Revision ID: 0002
Revises: 0001

`items.decode_tries` is the number of runs in a row whose decoder process (not the
file) failed on this version of the file; 0 for every other item. Files that
revision 0001 recorded as skipped for such a reason were never retried: they get
one try counted, so the next run retries them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The reasons indexer.workers and indexer.decode_worker gave a worker failure under 0001.
_WORKER_REASONS = ("decoder crashed %", "decoder timed out %", "decoder ran out of memory %")


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("decode_tries", sa.Integer, nullable=False, server_default="0"))
    items = sa.table("items", sa.column("status", sa.String), sa.column("reason", sa.Text), sa.column("decode_tries", sa.Integer))
    op.execute(
        items.update()
        .where(items.c.status == "skipped", sa.or_(*(items.c.reason.like(r) for r in _WORKER_REASONS)))
        .values(decode_tries=1)
    )


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("decode_tries")
