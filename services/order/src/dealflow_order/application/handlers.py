"""The order service's consumers, each event applied once through the inbox.

- `quote.accepted` (the saga, DESIGN.md section 4) becomes exactly one order;
- the opportunity events keep the deal's access keys and customer (`KnownDeal`), each
  field moving forward only, so the orders are seen by whoever may see their deal.
  `opportunity.stage_changed` is not among them: it carries the owners, but a stage
  move never changes them, and every change of owners has its own event
  (`opportunity.assigned`, or `created`/`updated` with the whole deal). Skipped from its
  header, unparsed, it costs this service nothing; applied, it cost two statements a
  stage move for a value it already had.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from dealflow_common.contracts.opportunity import (
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityShared,
    OpportunityUnshared,
    OpportunityUpdated,
)
from dealflow_common.contracts.quote import QuoteAccepted
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_order.application.unit_of_work import OrderUnitOfWork
from dealflow_order.domain.access import DealFacts, KnownDeal
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


async def _learn(
    uow: OrderUnitOfWork, opportunity_id: UUID, event: IncomingEvent[Any], facts: DealFacts
) -> None:
    """The row is locked while read and written, so two consumers cannot interleave."""
    now = uow.clock()
    deal = await uow.deals.lock_or_add(KnownDeal.unseen(opportunity_id), now)
    if deal.learn(facts, source=event.envelope.source, sequence=event.envelope.sequence):
        await uow.deals.save(deal, now)


async def deal_state(uow: OrderUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityCreated | OpportunityUpdated = event.payload
    state = payload.opportunity
    await _learn(
        uow,
        state.id,
        event,
        DealFacts(
            owners=list(state.owners),
            team_id=state.team_id,
            created_by=state.created_by,
            customer_id=state.customer.id,
            customer_name=state.customer.name,
            shares=list(state.shares),
        ),
    )


async def assigned(uow: OrderUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityAssigned = event.payload
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(owners=list(payload.owners), team_id=payload.team_id),
    )


async def shares_changed(uow: OrderUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityShared | OpportunityUnshared = event.payload
    await _learn(uow, payload.opportunity_id, event, DealFacts(shares=list(payload.shares)))


async def lock_ahead(uow: OrderUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: lock the deals' rows its opportunity events learn into, and find
    which of its accepted quotes have an order already, each kind in one statement."""
    await uow.deals.lock_ahead(
        event.payload.opportunity_id
        for event in events
        if event.envelope.type.startswith("opportunity.")
    )
    await uow.orders.look_up_quotes(
        event.payload.quote_id for event in events if event.envelope.type == "quote.accepted"
    )


HANDLERS: dict[str, EventHandler] = {
    "quote.accepted": create_order,
    "opportunity.created": deal_state,
    "opportunity.updated": deal_state,
    "opportunity.assigned": assigned,
    "opportunity.shared": shares_changed,
    "opportunity.unshared": shares_changed,
}
