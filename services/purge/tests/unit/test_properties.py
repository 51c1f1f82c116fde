"""Property-based tests (Hypothesis) of the purge agent under random interleavings.

Two properties of the projection, and one state machine of the whole agent:

- The projection (`application.projection`: `KnownDeal.learn` with `AppliedSequences`
  for the deals, accumulating facts for the quotes) ends the same whatever the order in
  which the events arrive and however often each arrives. Checked on the real store
  over SQLite, and against the in-memory store the state machine uses, so that the
  machine's store is known to project as the real one does.
- `PurgeAgentMachine` runs the real `PurgeAgent` (two replicas), the real event
  handlers and the operators' operations over an in-memory store with transactions,
  against models of the quote and opportunity services that behave as their purge
  handlers do (`dealflow_quote.application.purge`, `dealflow_opportunity.application.
  purge`). Hypothesis interleaves: new deals and quotes, events delivered in any order
  and again, commands served in any order and again, run requests and ticks on either
  replica, steps of the runs, crashes of a replica (its in-memory state is lost; what
  it committed stays), time passing, holds, pauses and policy changes. Checked on
  every commit and after every step: the opportunity purge is never requested while a
  quote the agent knows of is not purged (nor while the quote service holds one), a
  deal on hold is never sent a command, a dry run sends none, a deal is purged at most
  once, and only one run holds the agent at a time. At the end the operators resume,
  every message is delivered and the agent is let run: every eligible deal must then
  be purged, quotes and opportunity.

The in-memory store's transactions are whole because the agent yields to the event
loop only between them (in `_settle`'s sleep); the store asserts it. A crash is a
cancellation at such a point, which is what a process killed mid-transaction leaves
too: that transaction rolled back.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import StaticPool

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.envelope import CloudEvent
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityLost,
    OpportunityPurged,
    OpportunityPurgeRequested,
    OpportunityStageChanged,
    OpportunityWon,
    Stage,
)
from dealflow_common.contracts.quote import (
    QuoteCreated,
    QuotePurgeCompleted,
    QuotePurged,
    QuotePurgeRequested,
    QuoteStatus,
)
from dealflow_common.errors import Conflict
from dealflow_common.messaging.consumer import IncomingEvent
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.testing import deal_state
from dealflow_purge.adapters.schedule import CrontabSchedule
from dealflow_purge.adapters.store import AgentRow, Hold, PurgeStore, RunItem
from dealflow_purge.adapters.tables import known_deals, known_quotes, metadata
from dealflow_purge.application import operations, projection
from dealflow_purge.application.agent import AgentConfig, PurgeAgent
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.application.unit_of_work import PurgeUnitOfWork
from dealflow_purge.domain.eligibility import CLOSED, KnownDeal, kept_because
from dealflow_purge.domain.policy import PurgePolicy
from dealflow_purge.domain.progress import WAITING, Backoff, DealPurge, PurgeState
from dealflow_purge.domain.runs import ItemOutcome, PurgeRun, RunStatus

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OPPORTUNITY_SOURCE = "/dealflow/opportunity"
QUOTE_SOURCE = "/dealflow/quote"
CONFIG = AgentConfig(
    lease=timedelta(seconds=30),
    answer_within=timedelta(seconds=10),
    backoff=Backoff(timedelta(seconds=5), timedelta(seconds=20)),
    poll_interval=0,
    max_batch_size=10,
)
LOST_THE_LOCK = "lost the agent's lock"
S = PurgeState


def incoming(payload: EventPayload, source: str, sequence: int, event_id: UUID) -> Any:
    """The event as the consumer hands it to a handler."""
    envelope = CloudEvent(
        id=event_id,
        source=source,
        type=payload.event_type,
        subject=payload.subject,
        time=START,
        dataschema=payload.dataschema(),
        data=payload.model_dump(mode="json"),
        correlationid="property",
        sequence=sequence,
    )
    return IncomingEvent(envelope, payload)


@dataclass(frozen=True)
class Delivery:
    """One record on an event topic: a payload, its source's sequence and its id."""

    payload: EventPayload
    source: str
    sequence: int
    event_id: UUID = field(default_factory=uuid.uuid4)


def state_of(deal: UUID, stage: Stage, at: datetime, owners: Sequence[str] = ("alice",)) -> Any:
    closed_at = at if stage in CLOSED else None
    return deal_state(
        deal,
        title="Fleet renewal",
        stage=stage,
        owners=list(owners),
        created_at=at,
        updated_at=at,
        closed_at=closed_at,
    )


# The store of the purge service, in memory: `PurgeStore`'s contract, statement for
# statement (adapters/store.py), over dicts that a unit of work copies and commits.


@dataclass
class Tables:
    agent: AgentRow
    policy: PurgePolicy
    deals: dict[UUID, KnownDeal] = field(default_factory=dict)
    quotes: dict[UUID, tuple[UUID, datetime | None]] = field(default_factory=dict)
    holds: dict[UUID, Hold] = field(default_factory=dict)
    purges: dict[UUID, DealPurge] = field(default_factory=dict)
    runs: dict[UUID, PurgeRun] = field(default_factory=dict)
    items: dict[tuple[UUID, UUID], RunItem] = field(default_factory=dict)

    def copy(self) -> Tables:
        # Stored rows are never changed in place (the store keeps and gives copies).
        return Tables(
            self.agent,
            self.policy,
            dict(self.deals),
            dict(self.quotes),
            dict(self.holds),
            dict(self.purges),
            dict(self.runs),
            dict(self.items),
        )

    def live_quotes(self, opportunity_id: UUID) -> list[UUID]:
        return [q for q, (o, at) in self.quotes.items() if o == opportunity_id and at is None]


def _purge_row(purge: DealPurge) -> DealPurge:
    return replace(purge, events=[])


def _run_row(run: PurgeRun) -> PurgeRun:
    return replace(run, events=[])


class MemoryStore:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def agent(self) -> AgentRow:
        return self.t.agent

    async def set_paused(self, paused: bool) -> None:
        self.t.agent = replace(self.t.agent, paused=paused)

    async def claim(self, run_id: UUID, now: datetime, lease_until: datetime) -> bool:
        agent = self.t.agent
        free = agent.running_run_id is None or (
            agent.lease_until is not None and agent.lease_until <= now
        )
        if free:
            self.t.agent = replace(agent, running_run_id=run_id, lease_until=lease_until)
        return free

    async def renew(self, run_id: UUID, lease_until: datetime) -> bool:
        if self.t.agent.running_run_id != run_id:
            return False
        self.t.agent = replace(self.t.agent, lease_until=lease_until)
        return True

    async def release(self, run_id: UUID) -> None:
        if self.t.agent.running_run_id == run_id:
            self.t.agent = replace(self.t.agent, running_run_id=None, lease_until=None)

    async def move_due_time(self, seen: datetime | None, next_run_at: datetime) -> bool:
        if self.t.agent.next_run_at != seen:
            return False
        self.t.agent = replace(self.t.agent, next_run_at=next_run_at)
        return True

    async def policy(self) -> PurgePolicy:
        return self.t.policy

    async def save_policy(self, policy: PurgePolicy, by: str, now: datetime) -> None:
        self.t.policy = policy

    async def deal(self, opportunity_id: UUID) -> KnownDeal | None:
        return self.t.deals.get(opportunity_id)

    async def lock_or_add_deal(self, unseen: KnownDeal, now: datetime) -> KnownDeal:
        return self.t.deals.setdefault(unseen.opportunity_id, unseen)

    async def save_deal(self, deal: KnownDeal, now: datetime) -> None:
        if deal.opportunity_id in self.t.deals:
            self.t.deals[deal.opportunity_id] = deal

    def _past_retention(self, deal: KnownDeal, cutoffs: dict[Stage, datetime]) -> bool:
        return any(
            deal.stage == stage and deal.closed_at is not None and deal.closed_at < cutoff
            for stage, cutoff in cutoffs.items()
        )

    async def candidates(
        self, cutoffs: dict[Stage, datetime], after: tuple[datetime, UUID] | None, limit: int
    ) -> list[KnownDeal]:
        found = [
            d
            for d in self.t.deals.values()
            if self._past_retention(d, cutoffs) and d.opportunity_id not in self.t.purges
        ]
        if after is not None:
            found = [d for d in found if (d.closed_at, d.opportunity_id) > after]
        return sorted(found, key=lambda d: (d.closed_at, d.opportunity_id))[:limit]

    async def backlog(self, cutoffs: dict[Stage, datetime]) -> int:
        return sum(
            1
            for d in self.t.deals.values()
            if self._past_retention(d, cutoffs)
            and d.opportunity_id not in self.t.purges
            and d.opportunity_id not in self.t.holds
        )

    async def planned(self, cutoffs: dict[Stage, datetime], now: datetime, dry_run: bool) -> int:
        candidates = sum(
            1
            for d in self.t.deals.values()
            if self._past_retention(d, cutoffs) and d.opportunity_id not in self.t.purges
        )
        if dry_run:
            return candidates
        return candidates + sum(
            1
            for p in self.t.purges.values()
            if p.opportunity_id not in self.t.holds
            and (
                p.state == S.QUOTES_PURGED
                or (
                    p.state == S.FAILED
                    and p.next_attempt_at is not None
                    and p.next_attempt_at <= now
                )
            )
        )

    async def add_quote(self, quote_id: UUID, opportunity_id: UUID) -> None:
        self.t.quotes.setdefault(quote_id, (opportunity_id, None))

    async def mark_quote_purged(self, quote_id: UUID, opportunity_id: UUID, at: datetime) -> None:
        self.t.quotes[quote_id] = (opportunity_id, at)

    async def live_quotes(self, opportunity_id: UUID) -> list[UUID]:
        return self.t.live_quotes(opportunity_id)

    async def hold(self, opportunity_id: UUID) -> Hold | None:
        return self.t.holds.get(opportunity_id)

    async def held_among(self, ids: Sequence[UUID]) -> set[UUID]:
        return {i for i in ids if i in self.t.holds}

    async def place_hold(self, hold: Hold) -> None:
        self.t.holds[hold.opportunity_id] = hold

    async def release_hold(self, opportunity_id: UUID) -> bool:
        return self.t.holds.pop(opportunity_id, None) is not None

    async def deal_purge(self, opportunity_id: UUID) -> DealPurge | None:
        found = self.t.purges.get(opportunity_id)
        return _purge_row(found) if found else None

    async def save_deal_purge(self, purge: DealPurge) -> None:
        self.t.purges[purge.opportunity_id] = _purge_row(purge)

    async def save_deal_purges(self, purges: Sequence[DealPurge]) -> None:
        for purge in purges:
            await self.save_deal_purge(purge)

    async def unfinished(self, now: datetime, limit: int) -> list[DealPurge]:
        def due(p: DealPurge) -> bool:
            if p.state in (S.QUOTES_REQUESTED, S.OPPORTUNITY_REQUESTED):
                return p.deadline is not None and p.deadline <= now
            if p.state == S.FAILED:
                return p.next_attempt_at is not None and p.next_attempt_at <= now
            return p.state == S.QUOTES_PURGED

        found = sorted(
            (p for p in self.t.purges.values() if due(p) and p.opportunity_id not in self.t.holds),
            key=lambda p: (p.updated_at, p.opportunity_id),
        )
        return [_purge_row(p) for p in found[:limit]]

    async def waiting_of_run(self, run_id: UUID) -> list[DealPurge]:
        return [
            _purge_row(p)
            for p in self.t.purges.values()
            if p.run_id == run_id and p.state not in (S.PURGED, S.FAILED)
        ]

    async def waiting_count_of_run(self, run_id: UUID) -> int:
        return sum(1 for p in self.t.purges.values() if p.run_id == run_id and p.state in WAITING)

    async def overdue_of_run(self, run_id: UUID, now: datetime) -> list[DealPurge]:
        return [
            _purge_row(p)
            for p in self.t.purges.values()
            if p.run_id == run_id
            and p.state in (S.QUOTES_REQUESTED, S.OPPORTUNITY_REQUESTED)
            and p.deadline is not None
            and p.deadline <= now
        ]

    async def add_run(self, run: PurgeRun) -> None:
        self.t.runs[run.id] = _run_row(run)

    async def save_run(self, run: PurgeRun) -> None:
        if run.id in self.t.runs:
            self.t.runs[run.id] = _run_row(run)

    async def run(self, run_id: UUID) -> PurgeRun | None:
        found = self.t.runs.get(run_id)
        return _run_row(found) if found else None

    async def put_item(
        self,
        run_id: UUID,
        opportunity_id: UUID,
        outcome: ItemOutcome,
        now: datetime,
        *,
        reason: str | None = None,
        quotes_purged: int = 0,
    ) -> None:
        self.t.items[(run_id, opportunity_id)] = RunItem(
            opportunity_id, outcome, reason, quotes_purged, now
        )

    async def put_items(
        self, run_id: UUID, now: datetime, items: Sequence[tuple[UUID, ItemOutcome, str | None]]
    ) -> None:
        for deal, outcome, reason in items:
            await self.put_item(run_id, deal, outcome, now, reason=reason)

    async def item_counts(self, run_id: UUID) -> dict[ItemOutcome, int]:
        return dict(Counter(i.outcome for (r, _), i in self.t.items.items() if r == run_id))


class Memory:
    """The purge service's database: committed tables and the outbox's commands."""

    def __init__(self, on_commit: Callable[[Tables, Tables, list[EventPayload]], None]) -> None:
        self.tables = Tables(
            AgentRow(paused=False, next_run_at=None, running_run_id=None, lease_until=None),
            PurgePolicy(retention_days_won=0, retention_days_lost=1, batch_size=2),
        )
        self.now = START
        self.outbox: list[EventPayload] = []
        self.in_transaction = False
        self._on_commit = on_commit

    def clock(self) -> datetime:
        return self.now

    def unit_of_work(self) -> Any:
        return MemoryUnitOfWork(self)

    def commit(self, tables: Tables, events: list[EventPayload]) -> None:
        self._on_commit(self.tables, tables, events)
        self.tables = tables
        self.outbox.extend(events)


class MemoryUnitOfWork:
    def __init__(self, memory: Memory) -> None:
        self._memory = memory
        self.clock = memory.clock

    async def __aenter__(self) -> MemoryUnitOfWork:
        assert not self._memory.in_transaction, "a transaction was left open across a yield"
        self._memory.in_transaction = True
        self.tables = self._memory.tables.copy()
        self.store = MemoryStore(self.tables)
        self._events: list[EventPayload] = []
        self._after: list[Callable[[], None]] = []
        return self

    async def __aexit__(self, *_: object) -> None:
        self._memory.in_transaction = False

    def record(self, *events: EventPayload) -> None:
        self._events.extend(events)

    def collect(self, aggregate: Any) -> None:
        self.record(*aggregate.events)
        aggregate.events.clear()

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    async def commit(self) -> None:
        self._memory.commit(self.tables, list(self._events))
        for callback in self._after:
            callback()


# 1. The projection: any order, any repetition, one result.

DEAL_EVENT_KINDS = ("stage", "won", "lost", "assigned", "purged")


@st.composite
def deal_histories(draw: st.DrawFn) -> list[Delivery]:
    """A few deals' opportunity events (numbered in order) and their quotes' events."""
    history: list[Delivery] = []
    for d in range(draw(st.integers(1, 3))):
        deal = uuid.UUID(int=d + 1)
        at = START
        sequence = 1
        history.append(
            Delivery(
                OpportunityCreated(
                    opportunity_id=deal, opportunity=state_of(deal, Stage.QUALIFICATION, at)
                ),
                OPPORTUNITY_SOURCE,
                sequence,
            )
        )
        for kind in draw(st.lists(st.sampled_from(DEAL_EVENT_KINDS), max_size=5)):
            at += timedelta(hours=draw(st.integers(1, 48)))
            sequence += draw(st.integers(1, 2))  # a gap: an event this service skips
            payload: EventPayload
            if kind == "stage":
                to_stage = draw(st.sampled_from([Stage.PROPOSAL, Stage.NEGOTIATION, *CLOSED]))
                payload = OpportunityStageChanged(
                    opportunity_id=deal,
                    from_stage=Stage.QUALIFICATION,
                    to_stage=to_stage,
                    probability=50,
                    changed_by="alice",
                    changed_at=at,
                    days_in_previous_stage=1.0,
                    owners=draw(st.lists(st.sampled_from(["alice", "bob"]), max_size=2)),
                    version=sequence,
                )
            elif kind == "won":
                payload = OpportunityWon(
                    opportunity_id=deal,
                    won_quote_id=None,
                    value=Money.of("1000", "USD"),
                    won_by="alice",
                    won_at=at,
                    version=sequence,
                )
            elif kind == "lost":
                payload = OpportunityLost(
                    opportunity_id=deal, reason="budget", lost_by="alice", lost_at=at, version=1
                )
            elif kind == "assigned":
                payload = OpportunityAssigned(
                    opportunity_id=deal,
                    action="team_assigned",
                    user_id=None,
                    owners=draw(st.lists(st.sampled_from(["alice", "bob"]), max_size=2)),
                    team_id=draw(st.sampled_from(["emea", "apac", None])),
                    assigned_by="alice",
                    assigned_at=at,
                    version=sequence,
                )
            else:
                payload = OpportunityPurged(
                    opportunity_id=deal,
                    run_id=uuid.UUID(int=0),
                    stage=Stage.CLOSED_LOST,
                    closed_at=at,
                    purged_at=at,
                )
            history.append(Delivery(payload, OPPORTUNITY_SOURCE, sequence))
        for q in range(draw(st.integers(0, 3))):
            quote = uuid.UUID(int=(d + 1) * 100 + q)
            history.append(Delivery(created_quote(deal, quote), QUOTE_SOURCE, 1))
            if draw(st.booleans()):
                history.append(Delivery(purged_quote(deal, quote, START), QUOTE_SOURCE, 2))
    return history


def created_quote(deal: UUID, quote: UUID) -> QuoteCreated:
    return QuoteCreated(
        opportunity_id=deal,
        quote_id=quote,
        status=QuoteStatus.DRAFT,
        total=Money.of("100", "USD"),
        valid_until=START + timedelta(days=30),
        line_count=1,
        created_by="alice",
        created_at=START,
    )


def purged_quote(deal: UUID, quote: UUID, at: datetime) -> QuotePurged:
    return QuotePurged(
        opportunity_id=deal,
        quote_id=quote,
        run_id=uuid.UUID(int=0),
        previous_status=QuoteStatus.ABANDONED,
        purged_at=at,
    )


@st.composite
def arrivals(draw: st.DrawFn, history: list[Delivery]) -> list[Delivery]:
    """The same records in any order, some of them delivered again."""
    arrived = list(draw(st.permutations(history)))
    for again in draw(st.lists(st.sampled_from(history), max_size=len(history))):
        arrived.insert(draw(st.integers(0, len(arrived))), again)
    return arrived


async def project_on_sqlite(deliveries: list[Delivery]) -> dict[str, Any]:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        handlers = projection.handlers(CONFIG, PurgeMetrics(CollectorRegistry()))
        for d in deliveries:
            async with PurgeUnitOfWork(engine, Outbox("/dealflow/purge"), lambda: START) as uow:
                await handlers[d.payload.event_type](
                    uow, incoming(d.payload, d.source, d.sequence, d.event_id)
                )
                await uow.commit()
        async with engine.connect() as connection:
            deals = (await connection.execute(select(known_deals))).all()
            quotes = (await connection.execute(select(known_quotes))).all()
        return {
            "deals": {
                r.opportunity_id: (Stage(r.stage), r.closed_at, tuple(r.owners), r.team_id)
                for r in deals
            },
            "quotes": {r.quote_id: (r.opportunity_id, r.purged_at) for r in quotes},
        }
    finally:
        await engine.dispose()


async def project_in_memory(deliveries: list[Delivery]) -> dict[str, Any]:
    memory = Memory(lambda *_: None)
    handlers = projection.handlers(CONFIG, PurgeMetrics(CollectorRegistry()))
    for d in deliveries:
        async with memory.unit_of_work() as uow:
            await handlers[d.payload.event_type](
                uow, incoming(d.payload, d.source, d.sequence, d.event_id)
            )
            await uow.commit()
    return {
        "deals": {
            i: (k.stage, k.closed_at, k.owners, k.team_id) for i, k in memory.tables.deals.items()
        },
        "quotes": dict(memory.tables.quotes),
    }


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), history=deal_histories())
def test_the_projection_is_the_same_in_any_arrival_order(data: st.DataObject, history) -> None:
    arrived = data.draw(arrivals(history))
    in_order = asyncio.run(project_on_sqlite(history))
    assert asyncio.run(project_on_sqlite(arrived)) == in_order
    # The store the state machine below uses projects as the real one does.
    assert asyncio.run(project_in_memory(arrived)) == in_order
    for deal, (stage, *_) in in_order["deals"].items():
        last = max(
            (d for d in history if d.payload.subject == str(deal) and d.source != QUOTE_SOURCE),
            key=lambda d: d.sequence,
        )
        if isinstance(last.payload, OpportunityPurged):
            assert stage == Stage.PURGED, "a purged deal stays purged"


# 2. The agent's state machine, with the quote and opportunity services as models.


@dataclass
class ModelDeal:
    id: UUID
    stage: Stage
    closed_at: datetime | None


class Services:
    """The quote and opportunity services as their purge handlers behave: the quote
    service archives and deletes every quote of the deal and answers purged per quote
    then completed; the opportunity service purges a closed deal none of whose quotes
    it counts as live, answers a purged deal again from its archive, refuses otherwise.
    """

    def __init__(self) -> None:
        self.deals: dict[UUID, ModelDeal] = {}
        self.opportunity_archive: dict[UUID, OpportunityPurged] = {}
        self.quotes: dict[UUID, UUID] = {}
        self.quote_archive: Counter[UUID] = Counter()
        self.presence: dict[UUID, tuple[UUID, bool]] = {}
        """The opportunity service's count of quotes: quote -> (deal, purged)."""
        self.purge_pending: set[UUID] = set()
        self.sequences: Counter[tuple[str, UUID]] = Counter()
        """Each service's last sequence per deal (the outbox's `event_sequence`)."""
        self.events: list[Delivery] = []
        """What the two services published, for the purge agent to consume."""
        self._ids = itertools.count(1)

    def new_id(self) -> UUID:
        """Ids in order, so that a failing example replays the same (ids sort deals)."""
        return uuid.UUID(int=next(self._ids))

    def quotes_of(self, deal: UUID) -> list[UUID]:
        return [q for q, d in self.quotes.items() if d == deal]

    def _publish(self, source: str, payload: EventPayload) -> None:
        key = (source, UUID(payload.subject))
        self.sequences[key] += 1
        self.events.append(Delivery(payload, source, self.sequences[key]))

    def _opportunity_event(self, payload: EventPayload) -> None:
        self._publish(OPPORTUNITY_SOURCE, payload)

    def _quote_event(self, payload: EventPayload) -> None:
        deal = UUID(payload.subject)
        self._publish(QUOTE_SOURCE, payload)
        if isinstance(payload, QuoteCreated):
            self.presence[payload.quote_id] = (deal, False)
        elif isinstance(payload, QuotePurged):
            self.presence[payload.quote_id] = (deal, True)

    def new_deal(self, now: datetime) -> UUID:
        deal = ModelDeal(self.new_id(), Stage.NEGOTIATION, None)
        self.deals[deal.id] = deal
        self._opportunity_event(
            OpportunityCreated(
                opportunity_id=deal.id, opportunity=state_of(deal.id, Stage.NEGOTIATION, now)
            ),
        )
        return deal.id

    def new_quote(self, deal_id: UUID, now: datetime) -> None:
        deal = self.deals.get(deal_id)
        if deal is None or deal.stage in CLOSED or deal_id in self.purge_pending:
            return  # a quote needs an open deal
        quote = self.new_id()
        self.quotes[quote] = deal_id
        self._quote_event(created_quote(deal_id, quote))

    def close(self, deal_id: UUID, won: bool, at: datetime) -> None:
        deal = self.deals.get(deal_id)
        if deal is None or deal.stage in CLOSED:
            return
        deal.stage, deal.closed_at = (Stage.CLOSED_WON if won else Stage.CLOSED_LOST), at
        payload: EventPayload
        if won:
            payload = OpportunityWon(
                opportunity_id=deal_id,
                won_quote_id=None,
                value=Money.of("1000", "USD"),
                won_by="alice",
                won_at=at,
                version=2,
            )
        else:
            payload = OpportunityLost(
                opportunity_id=deal_id, reason="budget", lost_by="alice", lost_at=at, version=2
            )
        self._opportunity_event(payload)

    def serve(self, command: EventPayload, now: datetime) -> None:
        if isinstance(command, QuotePurgeRequested):
            self._purge_quotes(command, now)
        elif isinstance(command, OpportunityPurgeRequested):
            self._purge_opportunity(command, now)

    def _purge_quotes(self, request: QuotePurgeRequested, now: datetime) -> None:
        deal = request.opportunity_id
        self.purge_pending.add(deal)
        purged = self.quotes_of(deal)
        for quote in purged:
            del self.quotes[quote]
            self.quote_archive[quote] += 1
            assert self.quote_archive[quote] == 1, "a quote is archived once"
            self._quote_event(
                QuotePurged(
                    opportunity_id=deal,
                    quote_id=quote,
                    run_id=request.run_id,
                    previous_status=QuoteStatus.ABANDONED,
                    purged_at=now,
                )
            )
        self._quote_event(
            QuotePurgeCompleted(
                opportunity_id=deal,
                run_id=request.run_id,
                count=len(purged),
                remaining=0,
                completed_at=now,
            )
        )

    def _purge_opportunity(self, request: OpportunityPurgeRequested, now: datetime) -> None:
        deal = self.deals.get(request.opportunity_id)
        if deal is None:
            archived = self.opportunity_archive.get(request.opportunity_id)
            if archived is not None:
                self._publish(OPPORTUNITY_SOURCE, archived)
            return
        live = [q for q, (d, purged) in self.presence.items() if d == deal.id and not purged]
        if deal.stage not in CLOSED or live:
            return
        assert not self.quotes_of(deal.id), "the opportunity goes only after all its quotes"
        del self.deals[deal.id]
        purged = OpportunityPurged(
            opportunity_id=deal.id,
            run_id=request.run_id,
            stage=deal.stage,
            closed_at=deal.closed_at,
            purged_at=now,
        )
        self.opportunity_archive[deal.id] = purged
        self._opportunity_event(purged)


DEALS = st.tuples(
    st.integers(0, 3),
    st.sampled_from(["won", "lost", "open"]),
    st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(days=2)]),
)
"""A deal: its number of quotes, won, lost or still open, and how long ago it closed."""
PICKS = st.lists(st.integers(0, 50), min_size=1, max_size=8)
"""Which of the waiting messages go next, one after the other."""


class PurgeAgentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.memory = Memory(self._committed)
        self.services = Services()
        self.cron = CrontabSchedule()
        self.agents = [self._new_agent(), self._new_agent()]
        self.tasks: list[list[asyncio.Task[Any]]] = [[], []]
        self.handlers = projection.handlers(CONFIG, PurgeMetrics(CollectorRegistry()))
        self.to_agent: list[Delivery] = []
        self.delivered: list[Delivery] = []
        self.relayed = 0
        self.commands: list[EventPayload] = []
        self.served: list[EventPayload] = []
        self.purged: Counter[UUID] = Counter()
        self.dry_runs: set[UUID] = set()
        self.failing_before = sys.exc_info()[1]

    def _new_agent(self) -> PurgeAgent:
        return PurgeAgent(
            self.memory.unit_of_work, self.cron, CONFIG, PurgeMetrics(CollectorRegistry())
        )

    def _run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    # What every commit must respect (run inside the transaction's commit).

    def _committed(self, before: Tables, after: Tables, events: list[EventPayload]) -> None:
        for event in events:
            deal = event.opportunity_id
            if isinstance(event, OpportunityPurgeRequested):
                assert not after.live_quotes(deal), (
                    "the opportunity purge is requested while a quote the agent knows is live"
                )
                assert not self.services.quotes_of(deal), (
                    "the opportunity purge is requested while the quote service holds a quote"
                )
                assert deal not in after.holds, "a deal on hold is taken further"
                assert event.run_id not in self.dry_runs, "a dry run sends commands"
            if isinstance(event, QuotePurgeRequested):
                assert deal not in after.holds, "a deal on hold is sent a purge"
                assert deal not in self.services.opportunity_archive, "a purged deal again"
                known = after.deals[deal]
                assert known.stage in CLOSED, f"a {known.stage} deal is purged"
                assert event.run_id not in self.dry_runs, "a dry run sends commands"
        for deal, purge in after.purges.items():
            was = before.purges.get(deal)
            if purge.state == S.PURGED and (was is None or was.state != S.PURGED):
                self.purged[deal] += 1
                assert self.purged[deal] == 1, "a deal is purged at most once"
                assert deal in self.services.opportunity_archive
            assert purge.run_id not in self.dry_runs, "a dry run starts a purge"

    # Deals, quotes and the messages between the services.

    @initialize(deals=st.lists(DEALS, min_size=1, max_size=4))
    def some_deals(self, deals: list[tuple[int, str, timedelta]]) -> None:
        """Deals the agent already knows of when the machine starts."""
        for quotes, outcome, closed_ago in deals:
            self.new_deal(quotes, outcome, closed_ago)
        while self.to_agent:
            self.deliver([0])

    @precondition(lambda self: len(self.services.deals) < 6)
    @rule(deal=DEALS)
    def another_deal(self, deal: tuple[int, str, timedelta]) -> None:
        self.new_deal(*deal)

    def new_deal(self, quotes: int, outcome: str, closed_ago: timedelta) -> None:
        now = self.memory.now
        deal = self.services.new_deal(now - closed_ago - timedelta(hours=1))
        for _ in range(quotes):
            self.services.new_quote(deal, now)
        if outcome != "open":
            self.services.close(deal, outcome == "won", now - closed_ago)
        self._publish()

    @rule(index=st.integers(0, 10), won=st.booleans())
    def close_or_quote(self, index: int, won: bool) -> None:
        open_deals = [d for d in self.services.deals.values() if d.stage not in CLOSED]
        if open_deals:
            deal = open_deals[index % len(open_deals)].id
            if index % 3:
                self.services.new_quote(deal, self.memory.now)
            else:
                self.services.close(deal, won, self.memory.now)
            self._publish()

    def _publish(self) -> None:
        self.to_agent.extend(self.services.events)
        self.services.events.clear()

    def _deliver(self, delivery: Delivery) -> None:
        async def apply() -> None:
            async with self.memory.unit_of_work() as uow:
                event = incoming(
                    delivery.payload, delivery.source, delivery.sequence, delivery.event_id
                )
                await self.handlers[delivery.payload.event_type](uow, event)
                await uow.commit()

        self._run(apply())

    @precondition(lambda self: self.to_agent)
    @rule(picks=PICKS)
    def deliver(self, picks: list[int]) -> None:
        """Any record next: the agent reads two topics, and a topic is re-read after a
        consumer stops, so order is not something its handlers may count on."""
        for index in picks:
            if self.to_agent:
                delivery = self.to_agent.pop(index % len(self.to_agent))
                self._deliver(delivery)
                self.delivered.append(delivery)

    @precondition(lambda self: self.delivered)
    @rule(picks=PICKS)
    def deliver_again(self, picks: list[int]) -> None:
        """Records applied again, past the inbox even: each handler is idempotent."""
        for index in picks:
            self._deliver(self.delivered[index % len(self.delivered)])

    def _relay(self) -> None:
        self.commands.extend(self.memory.outbox[self.relayed :])
        self.relayed = len(self.memory.outbox)
        self.commands = [
            c
            for c in self.commands
            if isinstance(c, QuotePurgeRequested | OpportunityPurgeRequested)
        ]

    @rule(picks=PICKS)
    def serve_commands(self, picks: list[int]) -> None:
        """The quote and opportunity services take commands, in any order."""
        self._relay()
        for index in picks:
            if self.commands:
                command = self.commands.pop(index % len(self.commands))
                self.services.serve(command, self.memory.now)
                self.served.append(command)
        self._publish()

    @rule(picks=st.lists(st.integers(0, 100), min_size=1, max_size=12))
    def traffic(self, picks: list[int]) -> None:
        """Records to the agent and commands to the services, interleaved at random."""
        for pick in picks:
            self._relay()
            if pick % 2 and self.commands:
                command = self.commands.pop(pick // 2 % len(self.commands))
                self.services.serve(command, self.memory.now)
                self.served.append(command)
                self._publish()
            elif self.to_agent:
                delivery = self.to_agent.pop(pick // 2 % len(self.to_agent))
                self._deliver(delivery)
                self.delivered.append(delivery)

    @precondition(lambda self: self.served)
    @rule(index=st.integers(0, 50))
    def serve_a_command_again(self, index: int) -> None:
        """A command delivered twice (or sent again): the services answer again."""
        self.services.serve(self.served[index % len(self.served)], self.memory.now)
        self._publish()

    # The agent's replicas.

    def _alive(self, replica: int) -> list[asyncio.Task[Any]]:
        return [t for t in self.tasks[replica] if not t.done()]

    def _reap(self) -> None:
        for tasks in self.tasks:
            for task in [t for t in tasks if t.done()]:
                tasks.remove(task)
                if task.cancelled():
                    continue
                error = task.exception()
                if error is not None and LOST_THE_LOCK not in str(error):
                    raise error

    @rule(replica=st.integers(0, 1), dry_run=st.booleans())
    def ask_for_a_run(self, replica: int, dry_run: bool) -> None:
        agent = self.agents[replica]
        try:
            run, started = self._run(
                agent.request_run(trigger="operator", dry_run=dry_run, by="olga")
            )
        except Conflict:
            return  # paused
        if started:
            if run.dry_run:
                self.dry_runs.add(run.id)
            self.tasks[replica].append(self.loop.create_task(agent.execute(run.id)))
            self.let_the_agents_run(2)

    @rule(replica=st.integers(0, 1))
    def tick(self, replica: int) -> None:
        self.tasks[replica].append(self.loop.create_task(self.agents[replica].tick()))

    @rule(steps=st.integers(1, 12))
    def let_the_agents_run(self, steps: int) -> None:
        for _ in range(steps):
            self._run(asyncio.sleep(0))
        self._reap()

    @rule(replica=st.integers(0, 1))
    def crash(self, replica: int) -> None:
        """The replica's process dies: its tasks stop where they are; memory is lost."""
        tasks = self.tasks[replica]
        for task in tasks:
            task.cancel()
        if tasks:
            self._run(asyncio.gather(*tasks, return_exceptions=True))
        self.tasks[replica] = []
        self.agents[replica] = self._new_agent()

    @rule(seconds=st.sampled_from([1, 6, 11, 31, 3600, 86_400 + 60]))
    def time_passes(self, seconds: int) -> None:
        self.memory.now += timedelta(seconds=seconds)

    # Operators.

    @rule(index=st.integers(0, 10))
    def hold(self, index: int) -> None:
        deals = sorted(self.memory.tables.deals)
        if deals:
            deal = deals[index % len(deals)]
            self._run(operations.place_hold(self.memory.unit_of_work, deal, "audit", "olga"))

    @rule(index=st.integers(0, 10))
    def release_hold(self, index: int) -> None:
        held = sorted(self.memory.tables.holds)
        if held:
            self._run(operations.release_hold(self.memory.unit_of_work, held[index % len(held)]))

    @rule(paused=st.booleans())
    def pause_or_resume(self, paused: bool) -> None:
        try:
            if paused:
                self._run(operations.pause(self.memory.unit_of_work))
            else:
                self._run(operations.resume(self.memory.unit_of_work))
        except Conflict:
            pass

    @rule(won=st.sampled_from([0, 1]), lost=st.sampled_from([0, 1]), batch=st.integers(1, 3))
    def change_policy(self, won: int, lost: int, batch: int) -> None:
        self._run(
            operations.change_policy(
                self.memory.unit_of_work,
                self.cron,
                retention_days_won=won,
                retention_days_lost=lost,
                batch_size=batch,
                schedule="0 * * * *",
                max_batch_size=CONFIG.max_batch_size,
                by="olga",
            )
        )

    # After every step.

    @invariant()
    def one_run_holds_the_agent(self) -> None:
        tables = self.memory.tables
        running = {r.id for r in tables.runs.values() if r.status == RunStatus.RUNNING}
        assert running <= {tables.agent.running_run_id}, "two runs going at once"
        done = sorted(
            (
                r
                for r in tables.runs.values()
                if r.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
            ),
            key=lambda r: (r.started_at, r.finished_at),
        )
        for earlier, later in itertools.pairwise(done):
            assert earlier.finished_at is not None
            assert later.started_at >= earlier.finished_at, "two runs overlapped"

    @invariant()
    def purged_means_gone(self) -> None:
        for deal in self.services.opportunity_archive:
            assert not self.services.quotes_of(deal), "a deal deleted before its quotes"
        for deal, purge in self.memory.tables.purges.items():
            if purge.state == S.PURGED:
                assert deal in self.services.opportunity_archive

    # At the end: let it all go on, and every eligible deal ends purged.

    def eligible(self) -> list[UUID]:
        tables = self.memory.tables
        found = []
        for deal in self.services.deals.values():
            if deal.stage not in CLOSED:
                continue
            known = KnownDeal(deal.id, deal.stage, deal.closed_at)
            on_hold = deal.id in tables.holds
            if kept_because(known, tables.policy, self.memory.now, on_hold=on_hold) is None:
                found.append(deal.id)
        return found

    def settle_everything(self) -> None:
        self._run(operations.pause(self.memory.unit_of_work))
        self._run(operations.resume(self.memory.unit_of_work))
        for _ in range(300):
            moved = bool(self.to_agent)
            while self.to_agent:
                self.deliver([0])
            self._relay()
            moved = moved or bool(self.commands)
            while self.commands:
                self.serve_commands([0])
            self.let_the_agents_run(5)
            if not self._alive(0) and not self._alive(1):
                if not self.eligible() and not self.to_agent and not self.commands:
                    return
                self.ask_for_a_run(0, dry_run=False)
            if not moved:
                self.time_passes(6)
        left = {d: self.memory.tables.purges.get(d) for d in self.eligible()}
        raise AssertionError(f"eligible deals never purged: {left}")

    def teardown(self) -> None:
        try:
            # Only after a run that went well (teardown runs after a failed step too).
            if sys.exc_info()[1] is self.failing_before:
                self.settle_everything()
                for deal in self.services.opportunity_archive:
                    if deal not in self.memory.tables.holds:
                        assert self.memory.tables.purges[deal].state == S.PURGED
        finally:
            for tasks in self.tasks:
                for task in tasks:
                    task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()


PurgeAgentMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPurgeAgentStateMachine = PurgeAgentMachine.TestCase


def test_the_in_memory_store_refuses_an_open_transaction_across_a_yield() -> None:
    memory = Memory(lambda *_: None)

    async def two_at_once() -> None:
        async with memory.unit_of_work(), memory.unit_of_work():
            pass

    with pytest.raises(AssertionError, match="left open"):
        asyncio.run(two_at_once())


# 3. The in-memory store answers the agent's questions as the real one does.

RUN_A, RUN_B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)


@st.composite
def stored_purges(draw: st.DrawFn) -> tuple[list[KnownDeal], list[DealPurge], set[UUID]]:
    """Known deals, their purges under two runs, and holds, as the agent may leave them."""
    moments = st.builds(lambda s: START + timedelta(seconds=s), st.integers(-40, 40))
    deals, purges, held = [], [], set()
    for n in range(draw(st.integers(1, 8))):
        deal = uuid.UUID(int=n + 1)
        stage = draw(st.sampled_from([Stage.NEGOTIATION, *CLOSED, Stage.PURGED]))
        closed_at = draw(moments) if stage in CLOSED else None
        deals.append(KnownDeal(deal, stage, closed_at))
        if draw(st.booleans()):
            purges.append(
                DealPurge(
                    opportunity_id=deal,
                    run_id=draw(st.sampled_from([RUN_A, RUN_B])),
                    state=draw(st.sampled_from([s for s in PurgeState if s != S.ELIGIBLE])),
                    attempts=1,
                    deadline=draw(st.none() | moments),
                    next_attempt_at=draw(st.none() | moments),
                    updated_at=draw(moments),
                )
            )
        if draw(st.booleans()):
            held.add(deal)
    return deals, purges, held


async def agent_queries(store: Any, limit: int) -> dict[str, Any]:
    cutoffs = {Stage.CLOSED_WON: START, Stage.CLOSED_LOST: START - timedelta(seconds=20)}
    return {
        "unfinished": [p.opportunity_id for p in await store.unfinished(START, limit)],
        "waiting": [await store.waiting_count_of_run(r) for r in (RUN_A, RUN_B)],
        "overdue": [
            sorted(p.opportunity_id for p in await store.overdue_of_run(r, START))
            for r in (RUN_A, RUN_B)
        ],
        "candidates": [d.opportunity_id for d in await store.candidates(cutoffs, None, limit)],
        "backlog": await store.backlog(cutoffs),
        "planned": [await store.planned(cutoffs, START, dry) for dry in (True, False)],
    }


async def fill(
    store: Any, deals: list[KnownDeal], purges: list[DealPurge], held: set[UUID]
) -> None:
    for deal in deals:
        await store.lock_or_add_deal(deal, START)
        await store.save_deal(deal, START)
    for purge in purges:
        await store.save_deal_purge(purge)
    for deal_id in held:
        await store.place_hold(Hold(deal_id, "audit", "olga", START))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(stored=stored_purges(), limit=st.integers(1, 4))
def test_the_in_memory_store_answers_as_the_real_one(stored, limit: int) -> None:
    async def on_sqlite() -> dict[str, Any]:
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
            async with engine.begin() as connection:
                await fill(PurgeStore(connection), *stored)
            async with engine.connect() as connection:
                return await agent_queries(PurgeStore(connection), limit)
        finally:
            await engine.dispose()

    async def in_memory() -> dict[str, Any]:
        store = MemoryStore(Memory(lambda *_: None).tables)
        await fill(store, *stored)
        return await agent_queries(store, limit)

    assert asyncio.run(in_memory()) == asyncio.run(on_sqlite())


# 4. What the state machine found, kept as plain examples.


def test_a_hold_placed_while_the_quotes_are_purged_does_not_hang_the_run() -> None:
    """The run waited for a held deal whose quotes were purged: it waits for no answer,
    so the run never ended and kept the agent's lock for ever."""
    machine = PurgeAgentMachine()
    machine.some_deals([(1, "won", timedelta(hours=1))])
    machine.ask_for_a_run(replica=0, dry_run=False)
    machine.hold(index=0)
    machine.serve_commands(picks=[0])
    machine.deliver(picks=[0, 0])
    machine.let_the_agents_run(steps=5)
    assert machine.memory.tables.purges[uuid.UUID(int=1)].state == S.QUOTES_PURGED
    assert not machine._alive(0), "the run ended"
    assert machine.memory.tables.agent.running_run_id is None, "and let the agent go"
    machine.teardown()


def test_deals_on_hold_do_not_keep_the_others_from_being_taken_up() -> None:
    """A run takes up unfinished deals a batch at a time; held ones (skipped) filled every
    batch, and a failed deal behind them was never retried."""
    machine = PurgeAgentMachine()
    machine.some_deals([(0, "won", timedelta(hours=1))] * 2 + [(1, "won", timedelta(hours=1))])
    machine.ask_for_a_run(replica=0, dry_run=False)
    machine.hold(index=0)
    machine.hold(index=1)
    machine.serve_commands(picks=[0, 0])
    # quote.purge_completed of the third deal before its quote.purged: it fails.
    machine.traffic(picks=[0, 0, 1, 2])
    assert machine.memory.tables.purges[uuid.UUID(int=3)].state == S.FAILED
    machine.teardown()  # every eligible deal ends purged


def test_a_late_answer_for_a_failed_deal_with_a_quote_left_is_no_error() -> None:
    """quote.purge_completed for a deal failed already, while a quote it knows of is not
    purged yet: the handler failed it again, which the table refuses (the record went
    to the dead letters)."""
    machine = PurgeAgentMachine()
    machine.some_deals([(2, "won", timedelta(hours=1))])
    machine.ask_for_a_run(replica=0, dry_run=False)
    machine.serve_commands(picks=[0])
    machine.serve_a_command_again(index=0)
    completed = [d for d in machine.to_agent if isinstance(d.payload, QuotePurgeCompleted)]
    for answer in completed:
        machine.to_agent.remove(answer)
        machine.to_agent.insert(0, answer)
    machine.deliver(picks=[0, 0])
    assert machine.memory.tables.purges[uuid.UUID(int=1)].state == S.FAILED
    machine.teardown()
