"""The opportunity's side of the accept-quote saga (DESIGN.md section 4).

The opportunity is the authority on whether a deal is won: on
`quote.acceptance_requested` an open opportunity without an accepted quote is won by
that quote (`opportunity.won`); any other answers `opportunity.acceptance_refused`.
Requests for one deal arrive in order (same key, same partition), so of two concurrent
acceptances the first wins and the second is refused. A request asked again by the
quote service is answered again; one read after its `answer_by` is not answered at
all (the quote service no longer waits for it). `order.created` records the
order made from the winning quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dealflow_common.contracts.opportunity import OpportunityWon
from dealflow_common.contracts.order import OrderCreated
from dealflow_common.contracts.quote import QuoteAcceptanceRequested
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork

SYSTEM = "system:quote-acceptance"


async def quote_acceptance_requested(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    request: QuoteAcceptanceRequested = event.payload
    opportunity = await uow.opportunities.get(request.opportunity_id)
    opportunity.accept_quote(
        request.quote_id,
        f"{SYSTEM}:{request.requested_by}",
        uow.clock(),
        request.total,
        request.answer_by,
    )
    await uow.opportunities.save(opportunity)
    won = any(
        isinstance(e, OpportunityWon) and e.won_quote_id == request.quote_id and not e.repeated
        for e in opportunity.events
    )
    uow.collect(opportunity)
    if won and uow.metrics is not None:
        accepted_at, histogram = event.envelope.time, uow.metrics.accept_to_won
        uow.after_commit(
            lambda: histogram.observe(max(0.0, (uow.clock() - accepted_at).total_seconds()))
        )


async def order_created(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    created: OrderCreated = event.payload
    opportunity = await uow.opportunities.get(created.opportunity_id)
    opportunity.record_order(created.order_id, uow.clock())
    await uow.opportunities.save(opportunity)
    uow.collect(opportunity)


async def lock_ahead(uow: OpportunityUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: load and lock, in one statement, the deals its events change."""
    await uow.opportunities.lock_ahead(
        event.payload.opportunity_id for event in events if event.envelope.type in HANDLERS
    )


HANDLERS: dict[str, EventHandler] = {
    "quote.acceptance_requested": quote_acceptance_requested,
    "order.created": order_created,
}
