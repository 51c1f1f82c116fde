"""Handlers of `dealflow.opportunity.events`: the read model the reports are summed from.

Each event is applied once (the inbox), and sets only the fields it carries that an
older event set last (`ReportedDeal.learn`), so the read model is the same whatever
order the events arrive in: live, after a re-delivery, or replayed from offset 0 by
`dealflow-reporting rebuild`. Stage changes are kept one row per event (the envelope
sequence is the key), the facts of time in stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from dealflow_common.contracts.opportunity import (
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityLost,
    OpportunityPurged,
    OpportunityShared,
    OpportunityStageChanged,
    OpportunityUnshared,
    OpportunityUpdated,
    OpportunityWon,
    Stage,
)
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_reporting.application.unit_of_work import ReportingUnitOfWork
from dealflow_reporting.domain.deal import (
    LOST,
    PURGE_STAGES,
    WON,
    DealFacts,
    ReportedDeal,
    contributions,
    owner_contributions,
    state_facts,
)
from dealflow_reporting.domain.figures import to_minor

CONSUMER_GROUP = "reporting-service"


async def _learn(
    uow: ReportingUnitOfWork,
    opportunity_id: UUID,
    event: IncomingEvent[Any],
    facts: DealFacts,
    *stages_seen: Stage,
) -> None:
    deal = await uow.deals.get_for_update(opportunity_id)
    new = deal is None
    before, owners_before = contributions(deal), owner_contributions(deal)
    if deal is None:
        deal = ReportedDeal(opportunity_id)
    # Most events carry the owners and some the shares, nearly always unchanged: their
    # rows are rewritten only when the list itself changed (four statements an event).
    owners, shares = set(deal.owners), list(deal.shares)
    deal.learn(facts, source=event.envelope.source, sequence=event.envelope.sequence)
    for stage in stages_seen:
        deal.reached(stage)
    await uow.deals.save(
        deal,
        new=new,
        owners_changed=set(deal.owners) != owners,
        shares_changed=list(deal.shares) != shares,
    )
    await uow.deals.adjust_sums(before, contributions(deal))
    await uow.deals.adjust_sums(owners_before, owner_contributions(deal), per_owner=True)


async def opportunity_created(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityCreated = event.payload
    await _learn(uow, payload.opportunity.id, event, state_facts(payload.opportunity))


async def opportunity_updated(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityUpdated = event.payload
    await _learn(uow, payload.opportunity.id, event, state_facts(payload.opportunity))


async def stage_changed(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityStageChanged = event.payload
    if not _learns(payload):
        return
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(
            stage=payload.to_stage, probability=payload.probability, owners=list(payload.owners)
        ),
        payload.from_stage,
    )
    await uow.deals.add_stage_change(
        payload.opportunity_id,
        event.envelope.sequence,
        payload.from_stage,
        payload.to_stage,
        payload.changed_at,
        payload.days_in_previous_stage,
    )


async def assigned(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityAssigned = event.payload
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(owners=list(payload.owners), team_id=payload.team_id),
    )


async def shares_changed(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityShared | OpportunityUnshared = event.payload
    # Both carry every share after the change: the newest list wins, whatever the order.
    await _learn(uow, payload.opportunity_id, event, DealFacts(shares=list(payload.shares)))


async def won(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityWon = event.payload
    # What the customer accepted is what was won; a deal won by hand, its value.
    value = payload.quote_total or payload.value
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(
            stage=Stage.CLOSED_WON,
            outcome=WON,
            closed_at=payload.won_at,
            won_currency=value.currency,
            won_amount_minor=to_minor(value.amount, value.currency),
        ),
    )


async def lost(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityLost = event.payload
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(
            stage=Stage.CLOSED_LOST,
            outcome=LOST,
            closed_at=payload.lost_at,
            lost_reason=payload.reason,
        ),
    )


async def purged(uow: ReportingUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityPurged = event.payload
    # The deal's retention is over: its title and customer go, and it leaves every
    # report; the row stays as a tombstone so that a late event cannot bring it back.
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(purged_at=payload.purged_at, title="", customer_name=""),
    )


async def lock_ahead(uow: ReportingUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: lock the rows of its deals in one statement."""
    await uow.deals.lock_ahead(
        event.payload.opportunity_id for event in events if _learns(event.payload)
    )


def _learns(payload: Any) -> bool:
    """Every event is learnt but a move into the purge's own stages: the deal keeps the
    stage it closed in."""
    return not (isinstance(payload, OpportunityStageChanged) and payload.to_stage in PURGE_STAGES)


HANDLERS: dict[str, EventHandler] = {
    OpportunityCreated.event_type: opportunity_created,
    OpportunityUpdated.event_type: opportunity_updated,
    OpportunityStageChanged.event_type: stage_changed,
    OpportunityAssigned.event_type: assigned,
    OpportunityShared.event_type: shares_changed,
    OpportunityUnshared.event_type: shares_changed,
    OpportunityWon.event_type: won,
    OpportunityLost.event_type: lost,
    OpportunityPurged.event_type: purged,
}
