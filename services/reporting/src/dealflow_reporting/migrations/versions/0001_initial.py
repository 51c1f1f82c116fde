"""The read model (deals, their owners and stage changes), exchange rates, forecast
snapshots; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

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

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    messaging_schema.create()
    op.create_table(
        "deals",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("customer_id", sa.String(length=100), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=False),
        sa.Column("lead_origin", sa.String(length=30), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("probability", sa.Integer(), nullable=False),
        sa.Column("expected_close_date", sa.Date(), nullable=True),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("owners", _JSON, nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=True),
        sa.Column("won_currency", sa.String(length=3), nullable=True),
        sa.Column("won_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("cycle_days", sa.Float(), nullable=True),
        sa.Column("furthest_stage", sa.Integer(), nullable=False),
        sa.Column("purged_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("applied", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_index("ix_deals_stage_close", "deals", ["stage", "expected_close_date"])
    op.create_index("ix_deals_closed_on", "deals", ["closed_on"])
    op.create_index("ix_deals_customer", "deals", ["customer_id"])
    op.create_index("ix_deals_team", "deals", ["team_id"])
    op.create_index("ix_deals_created_by", "deals", ["created_by"])
    op.create_table(
        "deal_owners",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id", "owner"),
    )
    op.create_index("ix_deal_owners_owner", "deal_owners", ["owner", "opportunity_id"])
    op.create_table(
        "stage_changes",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=False),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("changed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("days_in_previous_stage", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id", "sequence"),
    )
    op.create_table(
        "deal_sums",
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("team_key", sa.String(length=100), nullable=False),
        sa.Column("lead_origin_key", sa.String(length=30), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("deals", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("weighted_centi_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "stage", "team_key", "lead_origin_key", "currency", "year", "month"
        ),
    )
    op.create_table(
        "deal_owner_sums",
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("owner_key", sa.String(length=200), nullable=False),
        sa.Column("team_key", sa.String(length=100), nullable=False),
        sa.Column("lead_origin_key", sa.String(length=30), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("deals", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("weighted_centi_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind",
            "stage",
            "owner_key",
            "team_key",
            "lead_origin_key",
            "currency",
            "year",
            "month",
        ),
    )
    op.create_table(
        "exchange_rates",
        sa.Column("from_currency", sa.String(length=3), nullable=False),
        sa.Column("to_currency", sa.String(length=3), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("rate", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("from_currency", "to_currency", "effective_from"),
    )
    op.create_table(
        "forecast_snapshots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.String(length=40), nullable=False),
        sa.Column("taken_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slot"),
    )
    op.create_table(
        "forecast_snapshot_lines",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("dimension", sa.String(length=10), nullable=False),
        sa.Column("group_key", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("deals", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("weighted_centi_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["forecast_snapshots.id"]),
        sa.PrimaryKeyConstraint("snapshot_id", "month", "dimension", "group_key", "currency"),
    )


def downgrade() -> None:
    for table in (
        "forecast_snapshot_lines",
        "forecast_snapshots",
        "exchange_rates",
        "deal_owner_sums",
        "deal_sums",
        "stage_changes",
        "deal_owners",
        "deals",
    ):
        op.drop_table(table)
    messaging_schema.drop()
