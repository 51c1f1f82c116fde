"""The sequence service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)

from dealflow_common.db import JsonDocument, UtcDateTime

metadata = MetaData()

sequences = Table(
    "sequences",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The current version: new enrollments take it.
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    # The current version's trigger event, so that an event finds its sequences by index.
    Column("trigger_event", String(100), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime),
    Index("ix_sequences_trigger", "trigger_event", "retired_at"),
)

sequence_versions = Table(
    "sequence_versions",
    metadata,
    Column("sequence_id", Uuid, ForeignKey("sequences.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    # Name, trigger, steps and exit conditions as `SequenceDefinition.document()` writes
    # them; a version is never changed once written.
    Column("document", JsonDocument, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("sequence_id", Uuid, nullable=False),
    Column("sequence_version", Integer, nullable=False),
    Column("sequence_name", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("next_step", Integer),
    # The due time of the next step: the scheduler's work list (state, next_due_at).
    Column("next_due_at", UtcDateTime),
    Column("remaining_seconds", Float),
    Column("enrolled_by", String(200), nullable=False),
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("end_reason", Text),
    Column("version", Integer, nullable=False),
    Index("ix_enrollments_due", "state", "next_due_at"),
    Index("ix_enrollments_opportunity", "opportunity_id"),
)

enrollment_steps = Table(
    "enrollment_steps",
    metadata,
    # The primary key is the last guard against running one step twice: a second
    # record of the same step fails, and its whole transaction with it.
    Column("enrollment_id", Uuid, ForeignKey("enrollments.id"), primary_key=True),
    Column("step_no", Integer, primary_key=True),
    Column("action", String(20), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("executed_at", UtcDateTime, nullable=False),
    Column("result", String(20), nullable=False),
    Column("detail", Text),
    Column("task_id", Uuid),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("enrollment_id", Uuid),
    Column("kind", String(20), nullable=False),
    Column("title", String(500), nullable=False),
    Column("assignee", String(200), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("state", String(10), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("completed_by", String(200)),
    Column("completed_at", UtcDateTime),
    Column("version", Integer, nullable=False),
    Index("ix_tasks_opportunity", "opportunity_id", "state", "due_at"),
    Index("ix_tasks_assignee", "assignee", "state", "due_at"),
)

task_notes = Table(
    "task_notes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("task_id", Uuid, ForeignKey("tasks.id"), nullable=False),
    Column("text", Text, nullable=False),
    Column("author", String(200), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    Index("ix_task_notes_task", "task_id"),
)

known_deals = Table(
    "known_deals",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("owners", JsonDocument, nullable=False),
    Column("team_id", String(100)),
    Column("created_by", String(200), nullable=False),
    # Whom the deal is shared with (deal_access.shares_to_document); NULL: no one.
    Column("shares", JsonDocument),
    Column("title", String(300), nullable=False),
    Column("customer_name", String(200), nullable=False),
    Column("customer_id", String(100), nullable=False),
    Column("value_amount", String(40), nullable=False),
    Column("value_currency", String(3), nullable=False),
    Column("expected_close_date", Date),
    Column("lead_origin", String(20)),
    Column("contact_name", String(200)),
    Column("contact_email", String(320)),
    Column("last_activity_at", UtcDateTime, nullable=False),
    Column("inactive_reported_at", UtcDateTime),
    Column("close_date_reported", Date),
    # Per field, the sequence of the opportunity event that last set it (projection.py).
    Column("applied_sequences", JsonDocument),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_known_deals_activity", "stage", "last_activity_at"),
)
