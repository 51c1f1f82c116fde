"""Opportunities, owners, sales history, notes, assignment history; outbox and inbox.

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
        "opportunities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("customer_kind", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=100), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=False),
        sa.Column(
            "contact",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "contact_address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "value_amount", dealflow_common.db.ExactDecimal(precision=24, scale=6), nullable=False
        ),
        sa.Column("value_currency", sa.String(length=3), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("probability", sa.Integer(), nullable=False),
        sa.Column("expected_close_date", sa.Date(), nullable=True),
        sa.Column("next_action_date", sa.Date(), nullable=True),
        sa.Column("next_action_note", sa.Text(), nullable=True),
        sa.Column("lead_origin", sa.String(length=20), nullable=True),
        sa.Column("external_reference", sa.String(length=200), nullable=True),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column("won_quote_id", sa.Uuid(), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "stage_entered_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("closed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_opportunities_close_date", "opportunities", ["expected_close_date"], unique=False
    )
    op.create_index("ix_opportunities_customer", "opportunities", ["customer_id"], unique=False)
    op.create_index("ix_opportunities_listing", "opportunities", ["created_at", "id"], unique=False)
    op.create_index("ix_opportunities_stage", "opportunities", ["stage"], unique=False)
    op.create_index("ix_opportunities_team", "opportunities", ["team_id"], unique=False)
    op.create_table(
        "assignment_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=True),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("assigned_by", sa.String(length=200), nullable=False),
        sa.Column("assigned_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_assignment_history_opportunity",
        "assignment_history",
        ["opportunity_id", "id"],
        unique=False,
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.Column("added_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notes_opportunity", "notes", ["opportunity_id", "added_at"], unique=False)
    op.create_table(
        "opportunity_owners",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("opportunity_id", "user_id"),
    )
    op.create_index("ix_opportunity_owners_user", "opportunity_owners", ["user_id"], unique=False)
    op.create_table(
        "sales_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("changed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("days_in_previous_stage", sa.Float(), nullable=True),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("probability", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_sales_history_opportunity", "sales_history", ["opportunity_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sales_history_opportunity", table_name="sales_history")
    op.drop_table("sales_history")
    op.drop_index("ix_opportunity_owners_user", table_name="opportunity_owners")
    op.drop_table("opportunity_owners")
    op.drop_index("ix_notes_opportunity", table_name="notes")
    op.drop_table("notes")
    op.drop_index("ix_assignment_history_opportunity", table_name="assignment_history")
    op.drop_table("assignment_history")
    op.drop_index("ix_opportunities_team", table_name="opportunities")
    op.drop_index("ix_opportunities_stage", table_name="opportunities")
    op.drop_index("ix_opportunities_listing", table_name="opportunities")
    op.drop_index("ix_opportunities_customer", table_name="opportunities")
    op.drop_index("ix_opportunities_close_date", table_name="opportunities")
    op.drop_table("opportunities")
    messaging_schema.drop()
