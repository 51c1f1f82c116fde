"""Events published by the order service on `dealflow.order.events`.

An order's money moves are facts of their own: each payment and refund says what was
received or given back and where that leaves the order (`paid`, `balance`, `status`),
so a subscriber can follow an order's account without replaying its ledger.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import Field

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteLineData
from dealflow_common.contracts.topics import ORDER_EVENTS


class OrderStatus(StrEnum):
    """Where an order's account stands: nothing paid (net of refunds), part, all; or
    cancelled, which only an order with nothing paid may become."""

    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    CANCELLED = "cancelled"


class OrderCreated(EventPayload):
    """One order per accepted quote (the quote id is unique among orders)."""

    event_type = "order.created"
    topic = ORDER_EVENTS

    order_id: UUID
    quote_id: UUID
    total: Money
    lines: list[QuoteLineData]
    created_at: datetime


class OrderCancelled(EventPayload):
    """An order with nothing paid was called off; it takes no payment or invoice after."""

    event_type = "order.cancelled"
    topic = ORDER_EVENTS

    order_id: UUID
    reason: str
    cancelled_by: str
    cancelled_at: datetime


class OrderPaymentRecorded(EventPayload):
    event_type = "order.payment_recorded"
    topic = ORDER_EVENTS

    order_id: UUID
    payment_id: UUID
    amount: Money
    method: str
    reference: str | None = Field(description="The payment's reference at the payer's bank")
    received_at: datetime
    recorded_by: str
    paid: Money = Field(description="What the order has received, net of refunds, after it")
    balance: Money = Field(description="What is still owed after it")
    status: OrderStatus


class OrderRefunded(EventPayload):
    event_type = "order.refunded"
    topic = ORDER_EVENTS

    order_id: UUID
    refund_id: UUID
    amount: Money
    reason: str
    refunded_by: str
    refunded_at: datetime
    paid: Money = Field(description="What the order has received, net of refunds, after it")
    balance: Money = Field(description="What is still owed after it")
    status: OrderStatus


class OrderInvoiced(EventPayload):
    event_type = "order.invoiced"
    topic = ORDER_EVENTS

    order_id: UUID
    invoice_id: UUID
    number: str = Field(description="Gapless per year, e.g. INV-2026-000001")
    subtotal: Money
    tax: Money
    total: Money
    balance: Money = Field(description="What is still owed: the invoice's total less paid")
    status: OrderStatus
    issued_by: str
    issued_at: datetime
