"""The quote service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)

from dealflow_common.db import ExactDecimal, JsonDocument, UtcDateTime
from dealflow_common.idempotency import request_keys_table

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("list_price_amount", ExactDecimal, nullable=False),
    Column("list_price_currency", String(3), nullable=False),
    Column("billing", String(20), nullable=False),
    Column("billing_period", String(10)),
    Column("retired_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)

bundles = Table(
    "bundles",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("price_amount", ExactDecimal, nullable=False),
    Column("price_currency", String(3), nullable=False),
    Column("billing_period", String(10), nullable=False),
    Column("retired_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)

bundle_items = Table(
    "bundle_items",
    metadata,
    Column("bundle_id", Uuid, ForeignKey("bundles.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("product_id", Uuid, ForeignKey("products.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    PrimaryKeyConstraint("bundle_id", "position"),
)

quotes = Table(
    "quotes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("status", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("valid_until", UtcDateTime, nullable=False),
    Column("status_reason", Text),
    Column("approved_by", String(200)),
    Column("accepted_at", UtcDateTime),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # The latest acceptance put to the opportunity (NULL: never accepted; revision 0003).
    Column("acceptance_requested_by", String(200)),
    Column("acceptance_requested_at", UtcDateTime),
    Column("acceptance_via", String(20)),
    Column("acceptance_answer_due_at", UtcDateTime),
    Column("acceptance_asked_again", Integer),
    Index("ix_quotes_opportunity", "opportunity_id", "created_at"),
    # The expiry job's read: presented quotes by due time.
    Index("ix_quotes_due", "status", "valid_until"),
    # The acceptance deadline job's read: quotes awaiting an answer, by due time.
    Index("ix_quotes_answer_due", "status", "acceptance_answer_due_at"),
    # DESIGN.md section 4: an opportunity has at most one accepted quote, whatever the code does.
    Index(
        "uq_quotes_one_accepted_per_opportunity",
        "opportunity_id",
        unique=True,
        postgresql_where=text("status = 'accepted'"),
        sqlite_where=text("status = 'accepted'"),
    ),
)

quote_lines = Table(
    "quote_lines",
    metadata,
    Column("quote_id", Uuid, ForeignKey("quotes.id", ondelete="CASCADE"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("product_id", Uuid),
    Column("bundle_id", Uuid),
    Column("sku", String(64)),
    Column("description", Text, nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("unit_price_amount", ExactDecimal, nullable=False),
    Column("unit_price_currency", String(3), nullable=False),
    Column("discount_percent", ExactDecimal, nullable=False),
    Column("billing", String(20), nullable=False),
    Column("billing_period", String(10)),
    PrimaryKeyConstraint("quote_id", "line_no"),
)

known_opportunities = Table(
    "known_opportunities",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("owners", JsonDocument, nullable=False),
    Column("team_id", String(100)),
    Column("created_by", String(200), nullable=False),
    Column("won_quote_id", Uuid),
    # Whom the deal is shared with, as `deal_access.shares_to_document` writes them;
    # NULL on a row from before sharing (revision 0005): shared with no one.
    Column("shares", JsonDocument),
    # Per field, the sequence of the event that last set it, and their source
    # (messaging/projection.py). One JSON document rather than a column per field: the
    # merge is done in Python on a locked row, so SQL never compares them, and a field
    # added to the projection needs no new column. NULL: a row written before revision
    # 0002, every field of which any event may set.
    Column("applied_sequences", JsonDocument),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Purged quotes, kept for audit (DESIGN.md section 6): the quote and its lines as they
# were, when, by which purge run and under which policy.
quote_archive = Table(
    "quote_archive",
    metadata,
    Column("quote_id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    Column("run_id", Uuid, nullable=False),
    Column("policy", JsonDocument, nullable=False),
    Column("purged_at", UtcDateTime, nullable=False),
    Column("quote", JsonDocument, nullable=False),
    Index("ix_quote_archive_opportunity", "opportunity_id"),
)

# The Idempotency-Keys of creates (`dealflow_common.idempotency`).
request_keys = request_keys_table(metadata)
