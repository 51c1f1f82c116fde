"""The order service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from dealflow_common.db import ExactDecimal, JsonDocument, UtcDateTime

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("opportunity_id", Uuid, nullable=False),
    # DESIGN.md section 4: exactly one order per accepted quote.
    Column("quote_id", Uuid, nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("total_amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # What the customer paid, net of refunds; the ledger holds each move.
    Column("paid_amount", ExactDecimal, nullable=False),
    Column("invoice_id", Uuid),
    Column("invoiced_total_amount", ExactDecimal),
    Column("cancelled_at", UtcDateTime),
    Column("cancelled_by", String(200)),
    Column("cancel_reason", Text),
    Index("ix_orders_opportunity", "opportunity_id"),
    # The list's order (newest first) and its cursor.
    Index("ix_orders_created", "created_at", "id"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", Uuid),
    Column("bundle_id", Uuid),
    Column("sku", String(64)),
    Column("description", Text, nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("unit_price_amount", ExactDecimal, nullable=False),
    Column("discount_percent", ExactDecimal, nullable=False),
    Column("total_amount", ExactDecimal, nullable=False),
    Column("billing", String(20), nullable=False),
    Column("billing_period", String(10)),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    # 1, 2, 3... per order, drawn under the order's row lock: the running balance's order.
    Column("entry_no", Integer, nullable=False),
    Column("kind", String(10), nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(50)),
    Column("reference", String(200)),
    Column("reason", Text),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("paid_after", ExactDecimal, nullable=False),
    Column("balance_after", ExactDecimal, nullable=False),
    Column("status_after", String(20), nullable=False),
    # A retried request (same Idempotency-Key) finds its entry here and is answered
    # from it; the fingerprint tells a retry from a different request reusing the key.
    Column("idempotency_key", String(200)),
    Column("request_fingerprint", String(64)),
    UniqueConstraint("order_id", "entry_no", name="uq_ledger_entry_no"),
    UniqueConstraint("order_id", "idempotency_key", name="uq_ledger_idempotency_key"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Uuid, primary_key=True),
    # One invoice per order: the unique index is the last word behind the row lock.
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("opportunity_id", Uuid, nullable=False),
    Column("number", String(32), nullable=False),
    Column("year", Integer, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("issued_by", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal_amount", ExactDecimal, nullable=False),
    Column("tax_amount", ExactDecimal, nullable=False),
    Column("total_amount", ExactDecimal, nullable=False),
    # An issued invoice never changes: its parts are kept as the document they are.
    Column("seller", JsonDocument, nullable=False),
    Column("buyer", JsonDocument, nullable=False),
    Column("lines", JsonDocument, nullable=False),
    Column("tax_lines", JsonDocument, nullable=False),
    UniqueConstraint("order_id", name="uq_invoices_order"),
    UniqueConstraint("number", name="uq_invoices_number"),
)

# The last invoice number drawn in each year. Drawn under this row's lock in the
# transaction that stores the invoice: numbers are then gapless (a rolled-back issue
# gives its number back) and increasing (the next waits for the lock).
invoice_counters = Table(
    "invoice_counters",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("last_number", Integer, nullable=False),
)

known_opportunities = Table(
    "known_opportunities",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The deal's access keys, named as dealflow_common.deal_access.can_view_deal reads them.
    Column("owners", JsonDocument, nullable=False),
    Column("team_id", String(100)),
    Column("created_by", String(200), nullable=False),
    Column("customer_id", String(100)),
    Column("customer_name", String(200)),
    # Whom the deal is shared with (deal_access.shares_to_document); NULL: no one.
    Column("shares", JsonDocument),
    # Per field, the sequence of the event that last set it (messaging/projection.py).
    Column("applied_sequences", JsonDocument),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_known_opportunities_customer", "customer_id"),
)
