"""Payments, refunds and invoices of an order; the deals' access keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Orders gain their account (paid, invoice, cancellation); each payment and refund is
a ledger entry with the balance it left; invoices are numbered from a counter row per
year; `known_opportunities` keeps who may see each deal's orders, from its events.
Orders created before this revision have nothing paid (server default 0).
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

MONEY = dealflow_common.db.ExactDecimal(precision=24, scale=6)
UTC = dealflow_common.db.UtcDateTime(timezone=True)


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("paid_amount", MONEY, nullable=False, server_default="0"))
        batch.add_column(sa.Column("invoice_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("invoiced_total_amount", MONEY, nullable=True))
        batch.add_column(sa.Column("cancelled_at", UTC, nullable=True))
        batch.add_column(sa.Column("cancelled_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
    op.create_index("ix_orders_created", "orders", ["created_at", "id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("entry_no", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("method", sa.String(length=50), nullable=True),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", UTC, nullable=False),
        sa.Column("paid_after", MONEY, nullable=False),
        sa.Column("balance_after", MONEY, nullable=False),
        sa.Column("status_after", sa.String(length=20), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "entry_no", name="uq_ledger_entry_no"),
        sa.UniqueConstraint("order_id", "idempotency_key", name="uq_ledger_idempotency_key"),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("issued_at", UTC, nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_amount", MONEY, nullable=False),
        sa.Column("tax_amount", MONEY, nullable=False),
        sa.Column("total_amount", MONEY, nullable=False),
        sa.Column("seller", _json(), nullable=False),
        sa.Column("buyer", _json(), nullable=False),
        sa.Column("lines", _json(), nullable=False),
        sa.Column("tax_lines", _json(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", name="uq_invoices_order"),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
    )
    op.create_table(
        "invoice_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year"),
    )
    op.create_table(
        "known_opportunities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owners", _json(), nullable=False),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=100), nullable=True),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("applied_sequences", _json(), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_known_opportunities_customer", "known_opportunities", ["customer_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_known_opportunities_customer", table_name="known_opportunities")
    op.drop_table("known_opportunities")
    op.drop_table("invoice_counters")
    op.drop_table("invoices")
    op.drop_table("ledger_entries")
    op.drop_index("ix_orders_created", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        for column in (
            "cancel_reason",
            "cancelled_by",
            "cancelled_at",
            "invoiced_total_amount",
            "invoice_id",
            "paid_amount",
        ):
            batch.drop_column(column)
