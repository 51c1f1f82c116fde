"""The purge service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    false,
)

from dealflow_common.db import JsonDocument, UtcDateTime

metadata = MetaData()

# One row (id 1): the agent's switch, its next due time and its lock. A run holds the
# lock by writing its id and a lease it renews; a lease that ran out means its process
# stopped, and the next run takes over. Due times live here so a restart neither skips
# nor repeats a scheduled run.
purge_agent = Table(
    "purge_agent",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("next_run_at", UtcDateTime),
    Column("running_run_id", Uuid),
    Column("lease_until", UtcDateTime),
)

purge_policy = Table(
    "purge_policy",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("retention_days_won", Integer, nullable=False),
    Column("retention_days_lost", Integer, nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("schedule", String(100), nullable=False),
    # Each run writes a JSON Lines journal of what it purged (migration 0002).
    Column("journal", Boolean, nullable=False, server_default=false()),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# The projection of opportunities, from dealflow.opportunity.events. `applied_sequences`
# holds, per field, the envelope sequence that last set it (messaging/projection.py):
# older or repeated records never roll a field back.
known_deals = Table(
    "known_deals",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("closed_at", UtcDateTime),
    Column("owners", JsonDocument, nullable=False),
    Column("team_id", String(100)),
    # The rest of the deal's access keys (deal_access); NULL on rows from before 0003.
    Column("created_by", String(200)),
    Column("shares", JsonDocument),
    Column("applied_sequences", JsonDocument, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_known_deals_closed", "stage", "closed_at", "opportunity_id"),
)

# The quotes each deal has, from dealflow.quote.events. A purged quote stays, marked:
# a re-sent `quote.created` must not bring it back.
known_quotes = Table(
    "known_quotes",
    metadata,
    Column("quote_id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("purged_at", UtcDateTime),
    Index("ix_known_quotes_opportunity", "opportunity_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("placed_by", String(200), nullable=False),
    Column("placed_at", UtcDateTime, nullable=False),
)

deal_purges = Table(
    "deal_purges",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("run_id", Uuid, nullable=False),
    Column("state", String(30), nullable=False),
    Column("failed_step", String(20)),
    Column("attempts", Integer, nullable=False),
    Column("deadline", UtcDateTime),
    Column("next_attempt_at", UtcDateTime),
    Column("last_error", Text),
    Column("quotes_purged", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_deal_purges_state", "state", "next_attempt_at"),
    Index("ix_deal_purges_run", "run_id", "state"),
)

purge_runs = Table(
    "purge_runs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("trigger", String(20), nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("status", String(20), nullable=False),
    Column("policy", JsonDocument, nullable=False),
    Column("started_by", String(200), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    # How many deals the run expected to examine when it started (its progress bar's
    # total; deals that become known while it goes may make it examine more). Null for
    # runs started before migration 0002.
    Column("planned", Integer),
    Column("examined", Integer, nullable=False),
    Column("purged", Integer, nullable=False),
    Column("would_purge", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("error", Text),
    Index("ix_purge_runs_started", "started_at", "id"),
)

purge_run_items = Table(
    "purge_run_items",
    metadata,
    Column("run_id", Uuid, nullable=False),
    Column("opportunity_id", Uuid, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("reason", Text),
    Column("quotes_purged", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "opportunity_id"),
)
