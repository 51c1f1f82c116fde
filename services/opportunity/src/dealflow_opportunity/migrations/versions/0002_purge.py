"""Quote presence per deal, and the archive of purged opportunities.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dealflow_common.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "quote_presence",
        sa.Column("quote_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("purged_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("quote_id"),
    )
    op.create_index(
        "ix_quote_presence_opportunity", "quote_presence", ["opportunity_id"], unique=False
    )
    op.create_table(
        "opportunity_archive",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("closed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("policy", _JSON, nullable=False),
        sa.Column("purged_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("opportunity", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_table(
        "purge_requests",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("policy", _JSON, nullable=False),
        sa.Column("requested_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )


def downgrade() -> None:
    op.drop_table("purge_requests")
    op.drop_table("opportunity_archive")
    op.drop_index("ix_quote_presence_opportunity", table_name="quote_presence")
    op.drop_table("quote_presence")
