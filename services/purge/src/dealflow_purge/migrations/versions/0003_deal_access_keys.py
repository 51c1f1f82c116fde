"""Known deals keep every access key of the deal rule: its creator and its shares.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Rows written before stay NULL (no creator known, shared with no one) until the deal's
next `opportunity.updated` or share event arrives.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("known_deals", sa.Column("created_by", sa.String(length=200), nullable=True))
    op.add_column(
        "known_deals",
        sa.Column(
            "shares",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("known_deals") as batch:
        batch.drop_column("shares")
        batch.drop_column("created_by")
