"""The Sharing tab: users and teams who may read or edit a deal.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "opportunity_shares",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("holder_kind", sa.String(length=10), nullable=False),
        sa.Column("holder_id", sa.String(length=200), nullable=False),
        sa.Column("grant", sa.String(length=10), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("opportunity_id", "holder_kind", "holder_id"),
    )
    op.create_index(
        "ix_opportunity_shares_holder",
        "opportunity_shares",
        ["holder_kind", "holder_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_opportunity_shares_holder", table_name="opportunity_shares")
    op.drop_table("opportunity_shares")
