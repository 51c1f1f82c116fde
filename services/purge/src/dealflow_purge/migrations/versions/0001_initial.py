"""The purge agent's tables: its switch and lock, policy, projections, holds, runs.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

The tables as they stood at this revision, written out (not read from the code's
current metadata), so that later revisions change them with their own operations.
The agent row and the default policy (30 days won and lost, 100 per batch, hourly)
are inserted here, so the service starts with both.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import Text

import dealflow_common.db
from dealflow_common.messaging import schema_v1 as messaging_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_schema.create()
    op.create_table(
        "deal_purges",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column("failed_step", sa.String(length=20), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deadline", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("quotes_purged", sa.Integer(), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_index("ix_deal_purges_run", "deal_purges", ["run_id", "state"], unique=False)
    op.create_index(
        "ix_deal_purges_state", "deal_purges", ["state", "next_attempt_at"], unique=False
    )
    op.create_table(
        "holds",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(length=200), nullable=False),
        sa.Column("placed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_table(
        "known_deals",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("closed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column(
            "applied_sequences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_index(
        "ix_known_deals_closed",
        "known_deals",
        ["stage", "closed_at", "opportunity_id"],
        unique=False,
    )
    op.create_table(
        "known_quotes",
        sa.Column("quote_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("purged_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("quote_id"),
    )
    op.create_index("ix_known_quotes_opportunity", "known_quotes", ["opportunity_id"], unique=False)
    op.create_table(
        "purge_agent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("running_run_id", sa.Uuid(), nullable=True),
        sa.Column("lease_until", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "purge_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("retention_days_won", sa.Integer(), nullable=False),
        sa.Column("retention_days_lost", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "purge_run_items",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("quotes_purged", sa.Integer(), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "opportunity_id"),
    )
    op.create_table(
        "purge_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "policy",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.Column("started_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("examined", sa.Integer(), nullable=False),
        sa.Column("purged", sa.Integer(), nullable=False),
        sa.Column("would_purge", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_purge_runs_started", "purge_runs", ["started_at", "id"], unique=False)
    agent = sa.table("purge_agent", sa.column("id"), sa.column("paused"))
    op.bulk_insert(agent, [{"id": 1, "paused": False}])
    policy = sa.table(
        "purge_policy",
        sa.column("id"),
        sa.column("retention_days_won"),
        sa.column("retention_days_lost"),
        sa.column("batch_size"),
        sa.column("schedule"),
        sa.column("version"),
        sa.column("updated_by"),
        sa.column("updated_at", dealflow_common.db.UtcDateTime()),
    )
    op.bulk_insert(
        policy,
        [
            {
                "id": 1,
                "retention_days_won": 30,
                "retention_days_lost": 30,
                "batch_size": 100,
                "schedule": "0 * * * *",
                "version": 1,
                "updated_by": "system:migration",
                "updated_at": datetime(2026, 12, 1, tzinfo=UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_purge_runs_started", table_name="purge_runs")
    op.drop_table("purge_runs")
    op.drop_table("purge_run_items")
    op.drop_table("purge_policy")
    op.drop_table("purge_agent")
    op.drop_index("ix_known_quotes_opportunity", table_name="known_quotes")
    op.drop_table("known_quotes")
    op.drop_index("ix_known_deals_closed", table_name="known_deals")
    op.drop_table("known_deals")
    op.drop_table("holds")
    op.drop_index("ix_deal_purges_state", table_name="deal_purges")
    op.drop_index("ix_deal_purges_run", table_name="deal_purges")
    op.drop_table("deal_purges")
    messaging_schema.drop()
