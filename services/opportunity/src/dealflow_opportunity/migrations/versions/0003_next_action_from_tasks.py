"""The deal's follow-up tasks, and where its next action came from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dealflow_common.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    # A next action already on a deal was set by hand: nothing else could set it before.
    op.add_column("opportunities", sa.Column("next_action_source", sa.String(20), nullable=True))
    op.add_column("opportunities", sa.Column("next_action_applied", _JSON, nullable=True))
    op.execute(
        "UPDATE opportunities SET next_action_source = 'hand' WHERE next_action_date IS NOT NULL"
    )
    op.create_table(
        "deal_tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("due_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("done_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("applied", _JSON, nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index(
        "ix_deal_tasks_open", "deal_tasks", ["opportunity_id", "done_at", "due_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_deal_tasks_open", table_name="deal_tasks")
    op.drop_table("deal_tasks")
    with op.batch_alter_table("opportunities") as batch:
        batch.drop_column("next_action_applied")
        batch.drop_column("next_action_source")
