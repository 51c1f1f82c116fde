"""Orders and their lines; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

The tables as they stood at this revision, written out (not read from the code's
current metadata), so that later revisions change them with their own operations.
"""

import sqlalchemy as sa
from alembic import op

import dealflow_common.db
from dealflow_common.messaging import schema_v1 as messaging_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_schema.create()
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("quote_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "total_amount", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("quote_id"),
    )
    op.create_index("ix_orders_opportunity", "orders", ["opportunity_id"], unique=False)
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=True),
        sa.Column("bundle_id", sa.Uuid(), nullable=True),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "quantity", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False
        ),
        sa.Column(
            "unit_price_amount",
            dealflow_common.db.ExactDecimal(precision=24, scale=6),
            nullable=False,
        ),
        sa.Column(
            "discount_percent",
            dealflow_common.db.ExactDecimal(precision=24, scale=6),
            nullable=False,
        ),
        sa.Column(
            "total_amount", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False
        ),
        sa.Column("billing", sa.String(length=20), nullable=False),
        sa.Column("billing_period", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("order_id", "line_no"),
    )


def downgrade() -> None:
    op.drop_table("order_lines")
    op.drop_index("ix_orders_opportunity", table_name="orders")
    op.drop_table("orders")
    messaging_schema.drop()
