"""The deals keep whom they are shared with (opportunity.shared/.unshared, and the
shares in opportunity.created/.updated), for the visibility rule.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Rows written before stay NULL (shared with no one) until the deal's next share event
or `opportunity.updated`; `dealflow-reporting rebuild` learns every share at once.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "deals",
        sa.Column(
            "shares",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
    )
    op.create_table(
        "deal_shares",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("holder_id", sa.String(length=200), nullable=False),
        sa.Column("grant", sa.String(length=4), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id", "kind", "holder_id"),
    )
    op.create_index("ix_deal_shares_holder", "deal_shares", ["kind", "holder_id", "opportunity_id"])


def downgrade() -> None:
    op.drop_index("ix_deal_shares_holder", table_name="deal_shares")
    op.drop_table("deal_shares")
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("shares")
