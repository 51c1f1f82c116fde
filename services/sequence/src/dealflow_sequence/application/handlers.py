"""Handlers of `dealflow.opportunity.events`: the deal projection, triggers and exits.

Each event is applied once (the inbox) and keeps the projection moving forward only,
field by field; only an event whose stage was taken (newer than the stage held) starts
sequences or ends enrollments, so a late or re-sent `stage_changed` does neither.
Every opportunity event counts as activity on the deal, for the stale rule, but an
`opportunity.updated` that this service's own events caused (`updated_by:
system:sequence`, the deal's next action following its tasks): automation is not
activity, or a sequence's tasks would keep a quiet deal from ever being reported.

- A trigger (`opportunity.created`, `opportunity.stage_changed` into a stage) enrolls
  the deal in each sequence, not retired, whose trigger matches, unless the deal is
  already in that sequence (active or paused).
- Exit conditions cancel live enrollments: the deal closed (won or lost), or the deal
  left the stage whose entry started the sequence.
- `opportunity.purged` cancels every live enrollment of the deal, whatever the
  sequence's exit conditions say: the deal no longer exists, so nothing of it may run.
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
from dealflow_common.contracts.sequence import SEQUENCE_ACTOR
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_sequence.application.unit_of_work import SequenceUnitOfWork
from dealflow_sequence.domain.deal import DealFacts, KnownDeal
from dealflow_sequence.domain.definitions import CREATED, STAGE_CHANGED, ExitCondition
from dealflow_sequence.domain.enrollment import SYSTEM, Enrollment


async def _learn(
    uow: SequenceUnitOfWork,
    opportunity_id: UUID,
    event: IncomingEvent[Any],
    facts: DealFacts,
    *,
    activity: bool = True,
) -> tuple[KnownDeal, frozenset[str]]:
    """The deal's row, locked, with the facts newer than those held; the fields taken.

    The event's own time is the deal's activity; a clock running ahead at the source
    cannot put it in this service's future."""
    at = min(event.envelope.time, uow.clock())
    deal = await uow.deals.lock_or_add(KnownDeal.unseen(opportunity_id, at))
    taken = deal.learn(facts, source=event.envelope.source, sequence=event.envelope.sequence)
    if activity:
        deal.touch(at)
    await uow.deals.save(deal, uow.clock())
    return deal, taken


async def _apply_exits(uow: SequenceUnitOfWork, deal: KnownDeal) -> list[Enrollment]:
    """Cancel the enrollments the deal's new stage ends; returns those still live."""
    now = uow.clock()
    live = await uow.enrollments.live_of(deal.id)
    for enrollment in live:
        definition = await uow.sequences.version(
            enrollment.sequence_id, enrollment.sequence_version
        )
        reason = None
        if not deal.is_open and definition.exits_on(ExitCondition.DEAL_CLOSED):
            reason = f"the deal was closed ({deal.stage.value})"
        elif (
            definition.trigger.stage is not None
            and deal.stage != definition.trigger.stage
            and definition.exits_on(ExitCondition.TRIGGER_STAGE_LEFT)
        ):
            reason = f"the deal left {definition.trigger.stage.value} for {deal.stage.value}"
        if reason is not None:
            enrollment.cancel(reason, SYSTEM, now, by_hand=False)
            await uow.enrollments.save(enrollment)
            uow.collect(enrollment)
    return [enrollment for enrollment in live if enrollment.is_live]


async def _enroll_triggered(
    uow: SequenceUnitOfWork,
    deal: KnownDeal,
    event_type: str,
    event: IncomingEvent[Any],
    live_now: list[Enrollment] | None = None,
) -> None:
    """Enroll the deal in the sequences `event_type` starts; `live_now`, when the caller
    has just read the deal's live enrollments, saves reading them again."""
    if not deal.is_open:
        return
    starting = [
        definition
        for definition in await uow.sequences.triggered_by(event_type)
        if definition.trigger.matches(event_type, deal.stage, deal.lead_origin)
    ]
    if not starting:
        return  # the deal's live enrollments need not be read (most events start nothing)
    now = uow.clock()
    if live_now is None:
        live_now = await uow.enrollments.live_of(deal.id)
    live = {e.sequence_id for e in live_now}
    for definition in starting:
        if definition.id in live:
            continue
        enrollment = Enrollment.start(
            definition, deal.id, by=SYSTEM, now=now, trigger_event_id=event.envelope.id
        )
        await uow.enrollments.add(enrollment)
        uow.collect(enrollment)


def _all_facts(payload: OpportunityCreated | OpportunityUpdated) -> DealFacts:
    state = payload.opportunity
    return DealFacts(
        stage=state.stage,
        owners=list(state.owners),
        team_id=state.team_id,
        created_by=state.created_by,
        title=state.title,
        customer_name=state.customer.name,
        customer_id=state.customer.id,
        value_amount=format(state.value.amount, "f"),
        value_currency=state.value.currency,
        expected_close_date=state.expected_close_date,
        lead_origin=state.lead_origin,
        contact_name=state.contact.name if state.contact else None,
        contact_email=state.contact.email if state.contact else None,
        shares=list(state.shares),
    )


async def opportunity_created(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityCreated = event.payload
    deal, taken = await _learn(uow, payload.opportunity.id, event, _all_facts(payload))
    if "stage" in taken:
        await _enroll_triggered(uow, deal, CREATED, event)


async def opportunity_updated(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityUpdated = event.payload
    deal, taken = await _learn(
        uow,
        payload.opportunity.id,
        event,
        _all_facts(payload),
        activity=payload.updated_by != SEQUENCE_ACTOR,
    )
    if "stage" in taken:
        await _apply_exits(uow, deal)


async def stage_changed(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityStageChanged = event.payload
    deal, taken = await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(stage=payload.to_stage, owners=list(payload.owners)),
    )
    if "stage" in taken:
        still_live = await _apply_exits(uow, deal)
        await _enroll_triggered(uow, deal, STAGE_CHANGED, event, still_live)


async def assigned(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityAssigned = event.payload
    await _learn(
        uow,
        payload.opportunity_id,
        event,
        DealFacts(owners=list(payload.owners), team_id=payload.team_id),
    )


async def shares_changed(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    """Who may see the deal changed; nobody worked on it (not activity for the stale rule)."""
    payload: OpportunityShared | OpportunityUnshared = event.payload
    await _learn(
        uow, payload.opportunity_id, event, DealFacts(shares=list(payload.shares)), activity=False
    )


async def closed(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: OpportunityWon | OpportunityLost = event.payload
    stage = Stage.CLOSED_WON if isinstance(payload, OpportunityWon) else Stage.CLOSED_LOST
    deal, taken = await _learn(uow, payload.opportunity_id, event, DealFacts(stage=stage))
    if "stage" in taken:
        await _apply_exits(uow, deal)


async def purged(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    """The deal was archived and deleted: its live enrollments are cancelled, each
    with the reason; the projection keeps the deal as `purged`, so that no late event
    of it enrolls it again. Heard again (the purge agent may ask twice), nothing is
    left to cancel."""
    payload: OpportunityPurged = event.payload
    deal, _ = await _learn(uow, payload.opportunity_id, event, DealFacts(stage=Stage.PURGED))
    now = uow.clock()
    reason = f"the deal was purged (it was {payload.stage.value})"
    for enrollment in await uow.enrollments.live_of(deal.id):
        enrollment.cancel(reason, SYSTEM, now, by_hand=False)
        await uow.enrollments.save(enrollment)
        uow.collect(enrollment)


async def activity(uow: SequenceUnitOfWork, event: IncomingEvent[Any]) -> None:
    """An event that changes nothing projected but is activity on the deal (a note)."""
    await _learn(uow, event.payload.opportunity_id, event, DealFacts())


_MAY_MOVE_STAGE = frozenset(
    {
        "opportunity.updated",
        "opportunity.stage_changed",
        "opportunity.won",
        "opportunity.lost",
        "opportunity.purged",
    }
)
"""The events whose handlers read a deal's live enrollments (when they take its stage)."""


async def lock_ahead(uow: SequenceUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: lock the rows of its deals in one statement (every handler learns),
    then their live enrollments in another (a stage taken reads them). A deal new to
    the batch has none to read."""
    await uow.deals.lock_ahead(event.payload.opportunity_id for event in events)
    uow.enrollments.hold_none_live(uow.deals.absent_ids())
    moving = {e.payload.opportunity_id for e in events if e.envelope.type in _MAY_MOVE_STAGE}
    await uow.enrollments.lock_live_ahead(set(uow.deals.held_ids()) & moving)


HANDLERS: dict[str, EventHandler] = {
    "opportunity.created": opportunity_created,
    "opportunity.updated": opportunity_updated,
    "opportunity.stage_changed": stage_changed,
    "opportunity.assigned": assigned,
    "opportunity.shared": shares_changed,
    "opportunity.unshared": shares_changed,
    "opportunity.note_added": activity,
    "opportunity.won": closed,
    "opportunity.lost": closed,
    "opportunity.purged": purged,
}
