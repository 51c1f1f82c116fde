"""Sequences and their versions, enrollments and their steps, tasks and notes, the deal
projection; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

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
        "enrollments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("sequence_id", sa.Uuid(), nullable=False),
        sa.Column("sequence_version", sa.Integer(), nullable=False),
        sa.Column("sequence_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("next_step", sa.Integer(), nullable=True),
        sa.Column("next_due_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("remaining_seconds", sa.Float(), nullable=True),
        sa.Column("enrolled_by", sa.String(length=200), nullable=False),
        sa.Column("enrolled_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_enrollments_due", "enrollments", ["state", "next_due_at"], unique=False)
    op.create_index("ix_enrollments_opportunity", "enrollments", ["opportunity_id"], unique=False)
    op.create_table(
        "known_deals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("team_id", sa.String(length=100), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=100), nullable=False),
        sa.Column("value_amount", sa.String(length=40), nullable=False),
        sa.Column("value_currency", sa.String(length=3), nullable=False),
        sa.Column("expected_close_date", sa.Date(), nullable=True),
        sa.Column("lead_origin", sa.String(length=20), nullable=True),
        sa.Column("contact_name", sa.String(length=200), nullable=True),
        sa.Column("contact_email", sa.String(length=320), nullable=True),
        sa.Column(
            "last_activity_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "inactive_reported_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("close_date_reported", sa.Date(), nullable=True),
        sa.Column(
            "applied_sequences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_known_deals_activity", "known_deals", ["stage", "last_activity_at"], unique=False
    )
    op.create_table(
        "sequences",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("trigger_event", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_sequences_trigger", "sequences", ["trigger_event", "retired_at"], unique=False
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("assignee", sa.String(length=200), nullable=False),
        sa.Column("due_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("completed_by", sa.String(length=200), nullable=True),
        sa.Column("completed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tasks_assignee", "tasks", ["assignee", "state", "due_at"], unique=False)
    op.create_index(
        "ix_tasks_opportunity", "tasks", ["opportunity_id", "state", "due_at"], unique=False
    )
    op.create_table(
        "enrollment_steps",
        sa.Column("enrollment_id", sa.Uuid(), nullable=False),
        sa.Column("step_no", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("due_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("executed_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
        ),
        sa.PrimaryKeyConstraint("enrollment_id", "step_no"),
    )
    op.create_table(
        "sequence_versions",
        sa.Column("sequence_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
        ),
        sa.PrimaryKeyConstraint("sequence_id", "version"),
    )
    op.create_table(
        "task_notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("added_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_task_notes_task", "task_notes", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_task_notes_task", table_name="task_notes")
    op.drop_table("task_notes")
    op.drop_table("sequence_versions")
    op.drop_table("enrollment_steps")
    op.drop_index("ix_tasks_opportunity", table_name="tasks")
    op.drop_index("ix_tasks_assignee", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_sequences_trigger", table_name="sequences")
    op.drop_table("sequences")
    op.drop_index("ix_known_deals_activity", table_name="known_deals")
    op.drop_table("known_deals")
    op.drop_index("ix_enrollments_opportunity", table_name="enrollments")
    op.drop_index("ix_enrollments_due", table_name="enrollments")
    op.drop_table("enrollments")
    messaging_schema.drop()
