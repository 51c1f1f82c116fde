"""The order service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, String, Table, Text, Uuid

from dealflow_common.db import ExactDecimal, UtcDateTime

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
    Index("ix_orders_opportunity", "opportunity_id"),
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
