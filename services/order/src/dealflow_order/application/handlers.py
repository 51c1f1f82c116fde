"""The order service's side of the saga: an accepted quote becomes exactly one order."""

from __future__ import annotations

from typing import Any

from dealflow_common.contracts.quote import QuoteAccepted
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_order.application.unit_of_work import OrderUnitOfWork
from dealflow_order.domain.model import Order


async def create_order(uow: OrderUnitOfWork, event: IncomingEvent[Any]) -> None:
    accepted: QuoteAccepted = event.payload
    # The inbox already skips a redelivered event; this guards a second acceptance
    # event of the same quote (the unique index on quote_id is the last word).
    if await uow.orders.exists_for_quote(accepted.quote_id):
        return
    order = Order.from_accepted_quote(accepted, uow.clock())
    await uow.orders.add(order)
    uow.collect(order)


HANDLERS: dict[str, EventHandler] = {"quote.accepted": create_order}
