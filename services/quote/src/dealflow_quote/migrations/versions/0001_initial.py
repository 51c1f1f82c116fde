"""Catalog, quotes and their lines, known opportunities; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

The tables as they stood at this revision, written out (not read from the code's
current metadata), so that later revisions change them with their own operations.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dealflow_common.db
from dealflow_common.messaging import schema_v1 as messaging_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_schema.create()
    op.create_table(
        "bundles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "price_amount", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False
        ),
        sa.Column("price_currency", sa.String(length=3), nullable=False),
        sa.Column("billing_period", sa.String(length=10), nullable=False),
        sa.Column("retired_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sku"),
    )
    op.create_table(
        "known_opportunities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("won_quote_id", sa.Uuid(), nullable=True),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "list_price_amount",
            dealflow_common.db.ExactDecimal(precision=24, scale=6),
            nullable=False,
        ),
        sa.Column("list_price_currency", sa.String(length=3), nullable=False),
        sa.Column("billing", sa.String(length=20), nullable=False),
        sa.Column("billing_period", sa.String(length=10), nullable=True),
        sa.Column("retired_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sku"),
    )
    op.create_table(
        "quotes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("valid_until", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("accepted_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quotes_due", "quotes", ["status", "valid_until"], unique=False)
    op.create_index(
        "ix_quotes_opportunity", "quotes", ["opportunity_id", "created_at"], unique=False
    )
    op.create_index(
        "uq_quotes_one_accepted_per_opportunity",
        "quotes",
        ["opportunity_id"],
        unique=True,
        postgresql_where=sa.text("status = 'accepted'"),
        sqlite_where=sa.text("status = 'accepted'"),
    )
    op.create_table(
        "bundle_items",
        sa.Column("bundle_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["bundle_id"], ["bundles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("bundle_id", "position"),
    )
    op.create_table(
        "quote_lines",
        sa.Column("quote_id", sa.Uuid(), nullable=False),
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
        sa.Column("unit_price_currency", sa.String(length=3), nullable=False),
        sa.Column(
            "discount_percent",
            dealflow_common.db.ExactDecimal(precision=24, scale=6),
            nullable=False,
        ),
        sa.Column("billing", sa.String(length=20), nullable=False),
        sa.Column("billing_period", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(["quote_id"], ["quotes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("quote_id", "line_no"),
    )


def downgrade() -> None:
    op.drop_table("quote_lines")
    op.drop_table("bundle_items")
    op.drop_index(
        "uq_quotes_one_accepted_per_opportunity",
        table_name="quotes",
        postgresql_where=sa.text("status = 'accepted'"),
        sqlite_where=sa.text("status = 'accepted'"),
    )
    op.drop_index("ix_quotes_opportunity", table_name="quotes")
    op.drop_index("ix_quotes_due", table_name="quotes")
    op.drop_table("quotes")
    op.drop_table("products")
    op.drop_table("known_opportunities")
    op.drop_table("bundles")
    messaging_schema.drop()
