"""The quote service's side of the accept-quote saga, and its opportunity projection.

Handlers of `dealflow.opportunity.events`, each applied once through the inbox:
- every event keeps the projection of the opportunity (stage, owners, team, shares), each
  field moving forward only: a late or re-sent event never sets a field back (a move
  between two open stages is skipped: see `stage_changed`);
- `opportunity.won` marks the winning quote accepted and abandons the other open
  quotes; `opportunity.lost` abandons them all;
- `opportunity.acceptance_refused` returns the quote to presented, and abandons it
  when the opportunity is already closed.
A quote waiting for the opportunity's answer (accept_pending) is left to that answer:
the opportunity service answers every acceptance request, won or refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from dealflow_common.contracts.opportunity import (
    OpportunityAcceptanceRefused,
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityLost,
    OpportunityShared,
    OpportunityStageChanged,
    OpportunityUnshared,
    OpportunityUpdated,
    OpportunityWon,
    Stage,
)
from dealflow_common.contracts.quote import QuoteStatus
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_quote.application.arrivals import OpportunityArrivals
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.domain.access import OPEN_STAGES, DealFacts, KnownOpportunity
from dealflow_quote.domain.model import Quote

SYSTEM = "system:quote"


async def _known(uow: QuoteUnitOfWork, opportunity_id: UUID) -> KnownOpportunity:
    return await uow.opportunities.get(opportunity_id) or KnownOpportunity.unseen(opportunity_id)


async def _learn(
    uow: QuoteUnitOfWork, opportunity_id: UUID, event: IncomingEvent[Any], facts: DealFacts
) -> None:
    """Keep the projection moving forward only (DESIGN.md section 2): the facts are
    taken field by field, each only when this event is newer than the one that last set
    it. The row is locked while read and written, so two consumers cannot interleave."""
    now = uow.clock()
    deal = await uow.opportunities.lock_or_add(KnownOpportunity.unseen(opportunity_id), now)
    if deal.learn(facts, source=event.envelope.source, sequence=event.envelope.sequence):
        await uow.opportunities.save(deal, now)


async def opportunity_state(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityCreated | OpportunityUpdated = event.payload
    state = payload.opportunity
    await _learn(
        uow,
        state.id,
        event,
        DealFacts(
            stage=state.stage,
            owners=list(state.owners),
            team_id=state.team_id,
            created_by=state.created_by,
            won_quote_id=state.won_quote_id,
            shares=list(state.shares),
        ),
    )


async def stage_changed(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    """Only a move into a closed stage is learnt. This service asks only whether a deal
    is open (a closed deal is never reopened), and the owners a move carries changed, if
    at all, with their own event (`opportunity.assigned`): a move between open stages
    would cost two statements and change nothing it decides on. Skipping depends on the
    event alone, so any order of arrival still leaves the same copy."""
    payload: OpportunityStageChanged = event.payload
    if changes_nothing(payload):
        return
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(stage=payload.to_stage, owners=list(payload.owners)),
    )


async def assigned(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityAssigned = event.payload
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(owners=list(payload.owners), team_id=payload.team_id),
    )


async def shares_changed(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityShared | OpportunityUnshared = event.payload
    await _learn(uow, payload.opportunity_id, event, DealFacts(shares=list(payload.shares)))


async def won(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityWon = event.payload
    now = uow.clock()
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(stage=Stage.CLOSED_WON, won_quote_id=payload.won_quote_id),
    )
    reason = (
        f"the opportunity was won by quote {payload.won_quote_id}"
        if payload.won_quote_id
        else "the opportunity was won without a quote"
    )
    for quote in await uow.quotes.open_quotes_of(payload.opportunity_id):
        if quote.id == payload.won_quote_id:
            quote.confirm_acceptance(now)
        elif quote.status != QuoteStatus.ACCEPT_PENDING:
            quote.abandon(reason, SYSTEM, now)
        await _save(uow, quote)


async def lost(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityLost = event.payload
    now = uow.clock()
    await _learn(uow, payload.opportunity_id, event, DealFacts(stage=Stage.CLOSED_LOST))
    for quote in await uow.quotes.open_quotes_of(payload.opportunity_id):
        if quote.status != QuoteStatus.ACCEPT_PENDING:
            quote.abandon(f"the opportunity was lost: {payload.reason}", SYSTEM, now)
            await _save(uow, quote)


async def acceptance_refused(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityAcceptanceRefused = event.payload
    now = uow.clock()
    quote = await uow.quotes.get(payload.quote_id)
    if quote.refuse_acceptance(payload.reason, now):
        deal = await _known(uow, payload.opportunity_id)
        if not deal.is_open:
            quote.abandon(f"acceptance refused: {payload.reason}", SYSTEM, now)
    await _save(uow, quote)


async def _save(uow: QuoteUnitOfWork, quote: Quote) -> None:
    await uow.quotes.save(quote)
    uow.collect(quote)


def changes_nothing(payload: Any) -> bool:
    """A move between two open stages, which `stage_changed` skips. The consumer skips it
    before the batch's transaction (no inbox row: applied again, it still changes
    nothing), so three of a deal's seven events here cost no statement."""
    return isinstance(payload, OpportunityStageChanged) and payload.to_stage in OPEN_STAGES


def _learns(payload: Any) -> bool:
    """Whether the handler of this event takes facts into the deal's projection row."""
    if isinstance(payload, OpportunityStageChanged):
        return not changes_nothing(payload)
    return not isinstance(payload, OpportunityAcceptanceRefused)


async def lock_ahead(uow: QuoteUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: lock the rows its events take facts into, then the open quotes
    of the deals it closes, each kind in one statement (in the order the handlers lock
    them: a deal's row, then its quotes)."""
    await uow.opportunities.lock_ahead(
        event.payload.opportunity_id for event in events if _learns(event.payload)
    )
    await uow.quotes.lock_ahead_open_quotes(
        event.payload.opportunity_id
        for event in events
        if isinstance(event.payload, OpportunityWon | OpportunityLost)
    )


def handlers(arrivals: OpportunityArrivals) -> dict[str, EventHandler]:
    """The handlers by event type; a newly known opportunity wakes its waiting requests."""

    async def opportunity_created(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
        await opportunity_state(uow, event)
        opportunity_id = event.payload.opportunity_id
        uow.after_commit(lambda: arrivals.announce(opportunity_id))

    return {
        "opportunity.created": opportunity_created,
        "opportunity.updated": opportunity_state,
        "opportunity.stage_changed": stage_changed,
        "opportunity.assigned": assigned,
        "opportunity.shared": shares_changed,
        "opportunity.unshared": shares_changed,
        "opportunity.won": won,
        "opportunity.lost": lost,
        "opportunity.acceptance_refused": acceptance_refused,
    }
