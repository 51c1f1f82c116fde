"""The opportunity service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import TSVECTOR

from dealflow_common.db import BigId, ExactDecimal, JsonDocument, UtcDateTime
from dealflow_common.idempotency import request_keys_table

metadata = MetaData()

opportunities = Table(
    "opportunities",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("title", String(200), nullable=False),
    Column("description", Text),
    Column("customer_kind", String(20), nullable=False),
    Column("customer_id", String(100), nullable=False),
    Column("customer_name", String(200), nullable=False),
    Column("contact", JsonDocument),
    Column("contact_address", JsonDocument),
    Column("value_amount", ExactDecimal, nullable=False),
    Column("value_currency", String(3), nullable=False),
    Column("stage", String(20), nullable=False),
    Column("probability", Integer, nullable=False),
    Column("expected_close_date", Date),
    Column("next_action_date", Date),
    Column("next_action_note", Text),
    # hand, sequence or task: which rule set the next action (domain.next_action).
    Column("next_action_source", String(20)),
    # AppliedSequences of the sequence steps that planned it (forward only).
    Column("next_action_applied", JsonDocument),
    Column("lead_origin", String(20)),
    Column("external_reference", String(200)),
    Column("team_id", String(100)),
    Column("won_quote_id", Uuid),
    Column("order_id", Uuid),
    Column("lost_reason", Text),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("stage_entered_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    Column("version", Integer, nullable=False),
    # Values of the admin-defined fields by key (domain.custom_fields), normalised so
    # that a list filter compares them as kept.
    Column("custom_fields", JsonDocument),
    # The deal's competitors, decision issues and contacts with roles: small lists read
    # and written with the deal, never queried on their own.
    Column("competitors", JsonDocument),
    Column("decision_issues", JsonDocument),
    Column("contacts", JsonDocument),
    Index("ix_opportunities_listing", "created_at", "id"),
    Index("ix_opportunities_stage", "stage"),
    Index("ix_opportunities_team", "team_id"),
    Index("ix_opportunities_customer", "customer_id"),
    Index("ix_opportunities_close_date", "expected_close_date"),
)

opportunity_owners = Table(
    "opportunity_owners",
    metadata,
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("user_id", String(200), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("opportunity_id", "user_id"),
    Index("ix_opportunity_owners_user", "user_id"),
)

# The Sharing tab: who else may read or edit the deal. One row per user or team; the
# index on the holder serves the listing's "shared with me or my teams".
opportunity_shares = Table(
    "opportunity_shares",
    metadata,
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("holder_kind", String(10), nullable=False),
    Column("holder_id", String(200), nullable=False),
    Column("grant", String(10), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("opportunity_id", "holder_kind", "holder_id"),
    Index("ix_opportunity_shares_holder", "holder_kind", "holder_id"),
)

sales_history = Table(
    "sales_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("from_stage", String(20)),
    Column("to_stage", String(20), nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("changed_by", String(200), nullable=False),
    Column("days_in_previous_stage", Float),
    Column("owners", JsonDocument, nullable=False),
    Column("probability", Integer, nullable=False),
    Index("ix_sales_history_opportunity", "opportunity_id", "id"),
)

notes = Table(
    "notes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("reason", String(20), nullable=False),
    Column("text", Text, nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    Index("ix_notes_opportunity", "opportunity_id", "added_at"),
)

assignment_history = Table(
    "assignment_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("action", String(20), nullable=False),
    Column("user_id", String(200)),
    Column("team_id", String(100)),
    Column("owners", JsonDocument, nullable=False),
    Column("assigned_by", String(200), nullable=False),
    Column("assigned_at", UtcDateTime, nullable=False),
    Index("ix_assignment_history_opportunity", "opportunity_id", "id"),
)

# The quotes of each deal as the quote events tell them: the opportunity is purged
# only when none of its quotes is left (DESIGN.md section 6). A purged quote stays,
# marked, so that a re-sent `quote.created` does not bring it back.
quote_presence = Table(
    "quote_presence",
    metadata,
    Column("quote_id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("purged_at", UtcDateTime),
    Index("ix_quote_presence_opportunity", "opportunity_id"),
)

# Purged opportunities, kept for audit: the deal with its owners, notes, sales history
# and assignments as they were, when, by which purge run and under which policy.
opportunity_archive = Table(
    "opportunity_archive",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("closed_at", UtcDateTime),
    Column("run_id", Uuid, nullable=False),
    Column("policy", JsonDocument, nullable=False),
    Column("purged_at", UtcDateTime, nullable=False),
    Column("opportunity", JsonDocument, nullable=False),
)

# A purge the agent asked for while quotes of the deal were still on their way to being
# purged (the command and the quote events travel on different topics): it completes
# when the deal's last quote.purged arrives, instead of being refused and retried.
purge_requests = Table(
    "purge_requests",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("run_id", Uuid, nullable=False),
    Column("policy", JsonDocument, nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
)

# The deal's follow-up tasks as the sequence service's `task.*` events tell them, for
# the next action (the earliest open task's due date). Each field moves forward only
# (`applied`): a `task.completed` read before its `task.created` is not reopened.
deal_tasks = Table(
    "deal_tasks",
    metadata,
    Column("task_id", Uuid, primary_key=True),
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), nullable=False
    ),
    Column("title", String(500)),
    Column("due_at", UtcDateTime),
    Column("done_at", UtcDateTime),
    Column("applied", JsonDocument, nullable=False),
    Index("ix_deal_tasks_open", "opportunity_id", "done_at", "due_at"),
)

# The fields an admin defines for deals; retired, never deleted (deals keep their values).
custom_field_definitions = Table(
    "custom_field_definitions",
    metadata,
    Column("key", String(50), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("type", String(10), nullable=False),
    Column("required", Boolean, nullable=False),
    Column("choices", JsonDocument, nullable=False),
    Column("tab", String(100)),
    Column("position", Integer, nullable=False),
    Column("retired", Boolean, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Each deal's search document: title, description, customer name and notes, rewritten in
# the transaction that changes them (adapters.search). PostgreSQL searches its tsvector
# through the GIN index; SQLite searches the FTS5 table `opportunity_search_fts`, kept
# in step by triggers (migration 0006; not mapped here, SQLAlchemy has no virtual tables).
opportunity_search = Table(
    "opportunity_search",
    metadata,
    Column(
        "opportunity_id", Uuid, ForeignKey("opportunities.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("document", Text, nullable=False),
    Column("search_vector", TSVECTOR().with_variant(Text(), "sqlite")),
    Index("ix_opportunity_search_vector", "search_vector", postgresql_using="gin"),
)

# The Idempotency-Keys of creates (`dealflow_common.idempotency`).
request_keys = request_keys_table(metadata)
