"""The reporting service's tables (its own schema; no other service reads them).

`deals`, `deal_owners`, `deal_shares` and `stage_changes` are the read model: built only
from events, dropped and rebuilt by `dealflow-reporting rebuild`. `exchange_rates` and the forecast
snapshots are not derived from events and survive a rebuild.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
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

from dealflow_common.db import ExactDecimal, JsonDocument, UtcDateTime

metadata = MetaData()

deals = Table(
    "deals",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("title", String(300), nullable=False),
    Column("customer_id", String(100), nullable=False),
    Column("customer_name", String(200), nullable=False),
    Column("lead_origin", String(30)),
    Column("currency", String(3), nullable=False),
    # The value in the currency's minor unit: integer sums are exact on every backend.
    Column("amount_minor", BigInteger, nullable=False),
    Column("stage", String(20), nullable=False),
    Column("probability", Integer, nullable=False),
    Column("expected_close_date", Date),
    Column("team_id", String(100)),
    Column("created_by", String(200), nullable=False),
    Column("owners", JsonDocument, nullable=False),
    # Whom the deal is shared with (deal_access.shares_to_document); NULL: no one. The
    # customer's history passes them to can_view_deal; the SQL rule reads deal_shares.
    Column("shares", JsonDocument),
    Column("created_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("closed_on", Date),
    Column("outcome", String(10)),
    Column("won_currency", String(3)),
    Column("won_amount_minor", BigInteger),
    Column("lost_reason", Text),
    Column("cycle_days", Float),
    Column("furthest_stage", Integer, nullable=False),
    Column("purged_at", UtcDateTime),
    # Per field, the envelope sequence that last set it (AppliedSequences).
    Column("applied", JsonDocument, nullable=False),
    # The pipeline and the forecast read open deals by stage and expected close date; the
    # analytics closed deals by close day; the history one customer's deals.
    Index("ix_deals_stage_close", "stage", "expected_close_date"),
    Index("ix_deals_closed_on", "closed_on"),
    Index("ix_deals_customer", "customer_id"),
    Index("ix_deals_team", "team_id"),
    # A caller's own deals outside their teams (owned ones come through deal_owners).
    Index("ix_deals_created_by", "created_by"),
)

deal_owners = Table(
    "deal_owners",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    Column("owner", String(200), primary_key=True),
    Index("ix_deal_owners_owner", "owner", "opportunity_id"),
)

deal_shares = Table(
    "deal_shares",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    # "user" or "team", and the user's `sub` or the team id.
    Column("kind", String(4), primary_key=True),
    Column("holder_id", String(200), primary_key=True),
    Column("grant", String(4), nullable=False),
    # The deals shared with a caller or one of their teams: one indexed lookup per part.
    Index("ix_deal_shares_holder", "kind", "holder_id", "opportunity_id"),
)

stage_changes = Table(
    "stage_changes",
    metadata,
    Column("opportunity_id", Uuid, primary_key=True),
    # The envelope sequence: a change re-sent is the same row.
    Column("sequence", Integer, primary_key=True),
    Column("from_stage", String(20), nullable=False),
    Column("to_stage", String(20), nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("days_in_previous_stage", Float, nullable=False),
)


def _sum_columns(*more_keys: Column[Any]) -> list[Column[Any]]:
    """The columns of a table of kept sums: its keys (`more_keys` after the stage) and
    the three sums. Fresh columns each call: a Column belongs to one table."""
    return [
        Column("kind", String(4), primary_key=True),
        Column("stage", String(20), primary_key=True),
        *more_keys,
        Column("team_key", String(100), primary_key=True),
        Column("lead_origin_key", String(30), primary_key=True),
        Column("currency", String(3), primary_key=True),
        Column("year", Integer, primary_key=True),
        Column("month", Integer, primary_key=True),
        Column("deals", Integer, nullable=False),
        Column("amount_minor", BigInteger, nullable=False),
        Column("weighted_centi_minor", BigInteger, nullable=False),
    ]


deal_sums = Table(
    "deal_sums",
    metadata,
    # The deals summed as they change, so that the pipeline and the forecast read a few
    # thousand sums instead of every deal: "open" deals by stage and month of expected
    # close (year and month 0 when none), "won" deals by month of the close. Keys that
    # a deal lacks are "" (no team, no lead origin). Kept by the consumer in the same
    # transaction as the deal's row, so they always equal the sums over `deals`.
    *_sum_columns(),
)

deal_owner_sums = Table(
    "deal_owner_sums",
    metadata,
    # The same sums per owner (a deal counts once for each of its owners; "" is a deal
    # waiting in a team's queue), for reports by owner or of one owner.
    *_sum_columns(Column("owner_key", String(200), primary_key=True)),
)

exchange_rates = Table(
    "exchange_rates",
    metadata,
    Column("from_currency", String(3), primary_key=True),
    Column("to_currency", String(3), primary_key=True),
    Column("effective_from", Date, primary_key=True),
    Column("rate", ExactDecimal, nullable=False),
    Column("set_by", String(200), nullable=False),
    Column("set_at", UtcDateTime, nullable=False),
)

forecast_snapshots = Table(
    "forecast_snapshots",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The schedule's slot (its start, ISO 8601): replicas taking the same slot's
    # snapshot insert one row; the second insert is a no-op.
    Column("slot", String(40), nullable=False, unique=True),
    Column("taken_at", UtcDateTime, nullable=False),
)

forecast_snapshot_lines = Table(
    "forecast_snapshot_lines",
    metadata,
    Column("snapshot_id", Uuid, ForeignKey("forecast_snapshots.id"), primary_key=True),
    # A calendar month ("2026-07"); quarters are summed from months when read.
    Column("month", String(7), primary_key=True),
    # "owner", "team" or "all", and the owner's or team's id ("" for "all", no team).
    Column("dimension", String(10), primary_key=True),
    Column("group_key", String(200), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("deals", Integer, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("weighted_centi_minor", BigInteger, nullable=False),
)
