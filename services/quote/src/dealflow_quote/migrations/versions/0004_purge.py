"""The archive of purged quotes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dealflow_common.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quote_archive",
        sa.Column("quote_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column(
            "policy",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("purged_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "quote",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("quote_id"),
    )
    op.create_index(
        "ix_quote_archive_opportunity", "quote_archive", ["opportunity_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_quote_archive_opportunity", table_name="quote_archive")
    op.drop_table("quote_archive")
