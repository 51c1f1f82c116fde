"""The policy's journal flag, and how many deals a run planned to examine.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

`purge_policy.journal`: when true, each run writes a JSON Lines journal of the deals
it purged, skipped or failed (off for the policy in place). `purge_runs.planned`: the
deals a run expected to examine when it started, the total of an operator's progress
bar (null for the runs before this revision).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "purge_policy",
        sa.Column("journal", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("purge_runs", sa.Column("planned", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table, PostgreSQL drops the column in place.
    with op.batch_alter_table("purge_runs") as batch:
        batch.drop_column("planned")
    with op.batch_alter_table("purge_policy") as batch:
        batch.drop_column("journal")
