"""What the agent learns from the other services' events, applied once each (inbox).

- Opportunity events keep `known_deals` (stage, closed_at, owners, team), each field
  moving forward only by the envelope sequence (`dealflow_common.messaging.projection`,
  DESIGN.md section 2): a re-sent or late record never sets a field back, and what a
  late partial event says is still kept where no newer event said otherwise.
- Quote events keep `known_quotes`. A quote's facts only accumulate (created, then
  purged), so they are applied whatever their order, and a purged quote stays purged.
- `quote.purge_completed` and `opportunity.purged` are the answers that move a deal's
  purge on (see `domain.progress`): quotes first, then the opportunity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
from dealflow_common.contracts.quote import QuoteCreated, QuotePurgeCompleted, QuotePurged
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_purge.application.agent import AgentConfig
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.application.unit_of_work import PurgeUnitOfWork
from dealflow_purge.domain.eligibility import CLOSED, DealFacts, KnownDeal
from dealflow_purge.domain.progress import PurgeState, Trigger
from dealflow_purge.domain.runs import ItemOutcome

FactsOf = Callable[[Any], DealFacts]


def _full_state(payload: OpportunityCreated | OpportunityUpdated) -> DealFacts:
    state = payload.opportunity
    return DealFacts(
        stage=state.stage,
        closed_at=state.closed_at,
        owners=tuple(state.owners),
        team_id=state.team_id,
        created_by=state.created_by,
        shares=tuple(state.shares),
    )


def _stage_changed(payload: OpportunityStageChanged) -> DealFacts:
    closed_at = payload.changed_at if payload.to_stage in CLOSED else None
    return DealFacts(stage=payload.to_stage, closed_at=closed_at, owners=tuple(payload.owners))


def _assigned(payload: OpportunityAssigned) -> DealFacts:
    return DealFacts(owners=tuple(payload.owners), team_id=payload.team_id)


def _shares(payload: OpportunityShared | OpportunityUnshared) -> DealFacts:
    return DealFacts(shares=tuple(payload.shares))


def _won(payload: OpportunityWon) -> DealFacts:
    # A repeated win (an acceptance asked again) says the first win's moment: the same.
    return DealFacts(stage=Stage.CLOSED_WON, closed_at=payload.won_at)


def _lost(payload: OpportunityLost) -> DealFacts:
    return DealFacts(stage=Stage.CLOSED_LOST, closed_at=payload.lost_at)


def _purged(payload: OpportunityPurged) -> DealFacts:
    return DealFacts(stage=Stage.PURGED)


def _learning(facts_of: FactsOf) -> EventHandler:
    async def apply(uow: PurgeUnitOfWork, event: IncomingEvent[Any]) -> None:
        if changes_nothing(event.payload):
            return
        now = uow.clock()
        deal = await uow.store.lock_or_add_deal(KnownDeal.unseen(event.payload.opportunity_id), now)
        learned = deal.learn(
            facts_of(event.payload),
            source=event.envelope.source,
            sequence=event.envelope.sequence,
        )
        if learned is not None:
            await uow.store.save_deal(learned, now)

    return apply


def changes_nothing(payload: Any) -> bool:
    """Whether an event cannot change what the agent decides on.

    A move between two open stages cannot: the agent asks only whether a deal is closed
    (and since when), and a closed deal is never reopened, so its open stage is of no
    use; the owners it carries changed, if at all, with their own event
    (`opportunity.assigned`). Skipping it saves two statements per stage move, and the
    consumer skips it before the batch's transaction, without an inbox row (applied
    again, it still changes nothing). Skipping is a fact of the event alone, so any
    order of arrival still leaves the same copy.
    """
    return isinstance(payload, OpportunityStageChanged) and payload.to_stage not in CLOSED


_learn_purged = _learning(_purged)


async def lock_ahead(uow: PurgeUnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
    """Before a batch: lock the deals' rows its opportunity events learn into, at once."""
    await uow.store.lock_deals_ahead(
        event.payload.opportunity_id
        for event in events
        if event.envelope.type.startswith("opportunity.") and not changes_nothing(event.payload)
    )


async def quote_created(uow: PurgeUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: QuoteCreated = event.payload
    await uow.store.add_quote(payload.quote_id, payload.opportunity_id)


async def quote_purged(uow: PurgeUnitOfWork, event: IncomingEvent[Any]) -> None:
    payload: QuotePurged = event.payload
    await uow.store.mark_quote_purged(payload.quote_id, payload.opportunity_id, payload.purged_at)


def handlers(config: AgentConfig, metrics: PurgeMetrics) -> dict[str, EventHandler]:
    async def quotes_completed(uow: PurgeUnitOfWork, event: IncomingEvent[Any]) -> None:
        """Verify every quote the agent knows of is purged, then ask for the opportunity."""
        payload: QuotePurgeCompleted = event.payload
        now = uow.clock()
        purge = await uow.store.deal_purge(payload.opportunity_id)
        if purge is None or not purge.can(Trigger.QUOTES_COMPLETED):
            return
        live = await uow.store.live_quotes(payload.opportunity_id)
        if (live or payload.remaining) and not purge.can(Trigger.FAIL):
            return  # A late answer to a deal failed already: it is retried from its step.
        if live or payload.remaining:
            left = ", ".join(sorted(str(q) for q in live)) or f"{payload.remaining} quotes"
            purge.fail(f"quotes still there after the purge: {left}", now, config.backoff)
            await uow.store.put_item(
                purge.run_id, purge.opportunity_id, ItemOutcome.FAILED, now, reason=purge.last_error
            )
            metrics.failures.labels("quotes").inc()
        else:
            purge.quotes_completed(payload.count, now)
            uow.after_commit(lambda: metrics.quotes_purged.inc(payload.count))
            if await uow.store.hold(payload.opportunity_id) is None:
                policy = (await uow.store.policy()).snapshot()
                purge.request_opportunity(purge.run_id, policy, now, config.answer_within)
        await uow.store.save_deal_purge(purge)
        uow.collect(purge)
        if purge.state != PurgeState.FAILED:
            await uow.store.put_item(
                purge.run_id,
                purge.opportunity_id,
                ItemOutcome.IN_PROGRESS,
                now,
                quotes_purged=purge.quotes_purged,
            )

    async def opportunity_purged(uow: PurgeUnitOfWork, event: IncomingEvent[Any]) -> None:
        await _learn_purged(uow, event)
        payload: OpportunityPurged = event.payload
        now = uow.clock()
        purge = await uow.store.deal_purge(payload.opportunity_id)
        if purge is None or not purge.can(Trigger.OPPORTUNITY_PURGED):
            return
        purge.opportunity_purged(now)
        await uow.store.save_deal_purge(purge)
        await uow.store.put_item(
            purge.run_id,
            purge.opportunity_id,
            ItemOutcome.PURGED,
            now,
            quotes_purged=purge.quotes_purged,
        )
        uow.after_commit(metrics.opportunities_purged.inc)

    return {
        "opportunity.created": _learning(_full_state),
        "opportunity.updated": _learning(_full_state),
        "opportunity.stage_changed": _learning(_stage_changed),
        "opportunity.assigned": _learning(_assigned),
        "opportunity.shared": _learning(_shares),
        "opportunity.unshared": _learning(_shares),
        "opportunity.won": _learning(_won),
        "opportunity.lost": _learning(_lost),
        "opportunity.purged": opportunity_purged,
        "quote.created": quote_created,
        "quote.purged": quote_purged,
        "quote.purge_completed": quotes_completed,
    }
