"""Events published by the order service on `dealflow.order.events`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteLineData
from dealflow_common.contracts.topics import ORDER_EVENTS


class OrderCreated(EventPayload):
    """One order per accepted quote (the quote id is unique among orders)."""

    event_type = "order.created"
    topic = ORDER_EVENTS

    order_id: UUID
    quote_id: UUID
    total: Money
    lines: list[QuoteLineData]
    created_at: datetime
