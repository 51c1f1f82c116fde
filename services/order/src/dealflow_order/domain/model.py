"""An order: what the customer bought when they accepted one quote.

Built from the accepted quote's lines as `quote.accepted` carries them, since no
service reads another's tables. One order per quote: the quote id is unique.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.order import OrderCreated
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData
from dealflow_common.errors import NotFound


class OrderNotFound(NotFound):
    def __init__(self, order_id: UUID) -> None:
        super().__init__("order", order_id)


@dataclass(eq=False)
class Order:
    id: UUID
    opportunity_id: UUID
    quote_id: UUID
    status: str
    lines: list[QuoteLineData]
    total: Money
    created_at: datetime
    version: int
    events: list[EventPayload] = field(default_factory=list, repr=False)

    @classmethod
    def from_accepted_quote(cls, accepted: QuoteAccepted, now: datetime) -> Order:
        order = cls(
            id=uuid.uuid4(),
            opportunity_id=accepted.opportunity_id,
            quote_id=accepted.quote_id,
            status="open",
            lines=list(accepted.lines),
            total=accepted.total,
            created_at=now,
            version=1,
        )
        order.events.append(
            OrderCreated(
                opportunity_id=order.opportunity_id,
                order_id=order.id,
                quote_id=order.quote_id,
                total=order.total,
                lines=order.lines,
                created_at=now,
            )
        )
        return order
