"""The purge service's persistence: agent row, policy, projections, holds, progress, runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.deal_access import shares_from_document, shares_to_document
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.projection import (
    AppliedSequences,
    HeldInserts,
    HeldRows,
    ProjectionRows,
)
from dealflow_purge.adapters.tables import (
    deal_purges,
    holds,
    known_deals,
    known_quotes,
    purge_agent,
    purge_policy,
    purge_run_items,
    purge_runs,
)
from dealflow_purge.domain.eligibility import KnownDeal
from dealflow_purge.domain.journal import JournalEntry
from dealflow_purge.domain.policy import PurgePolicy
from dealflow_purge.domain.progress import WAITING, DealPurge, PurgeState
from dealflow_purge.domain.runs import ItemOutcome, PurgeRun, RunStatus

AGENT = 1
_KNOWN = ProjectionRows(known_deals, key="opportunity_id")
# Every quote created is one: run directly, a batch's quotes at once.
_ADD_QUOTE = {
    name: DirectStatement(
        dialect.insert(known_quotes).on_conflict_do_nothing(index_elements=["quote_id"])
    )
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


@dataclass(frozen=True)
class AgentRow:
    paused: bool
    next_run_at: datetime | None
    running_run_id: UUID | None
    lease_until: datetime | None


@dataclass(frozen=True)
class Hold:
    opportunity_id: UUID
    reason: str
    placed_by: str
    placed_at: datetime


@dataclass(frozen=True)
class RunItem:
    opportunity_id: UUID
    outcome: ItemOutcome
    reason: str | None
    quotes_purged: int
    updated_at: datetime


def _upsert(
    connection: AsyncConnection, table: Table, values: dict[str, Any], keys: Sequence[str]
) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in keys}
    return statement.on_conflict_do_update(index_elements=list(keys), set_=changed)


_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _upsert_rows(
    connection: AsyncConnection, table: Table, columns: Sequence[str], keys: Sequence[str]
) -> Any:
    """`_upsert` of `columns`, the rows given at execution (one, or many in one round
    trip). Built once per dialect and columns: the purge's hot path writes these rows
    for every deal and quote, and building the statement cost more CPU than running it."""
    cache_key = (connection.dialect.name, table.name, tuple(columns))
    statement = _UPSERTS.get(cache_key)
    if statement is None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        insert_ = dialect.insert(table)
        statement = insert_.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: insert_.excluded[k] for k in columns if k not in keys},
        )
        _UPSERTS[cache_key] = statement
    return statement


class PurgeStore:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._held_deals = HeldRows()
        self._quotes_to_add = HeldInserts(key="quote_id")
        """Quotes learnt and not inserted yet: `write_held` (or the next read or change
        of the quotes) inserts them in one round trip, not one statement per event."""

    # The agent: switch, due time and lock.

    async def agent(self) -> AgentRow:
        row = (await self._connection.execute(select(purge_agent))).one()
        return AgentRow(row.paused, row.next_run_at, row.running_run_id, row.lease_until)

    async def set_paused(self, paused: bool) -> None:
        await self._connection.execute(
            update(purge_agent).where(purge_agent.c.id == AGENT).values(paused=paused)
        )

    async def claim(self, run_id: UUID, now: datetime, lease_until: datetime) -> bool:
        """Take the agent's lock unless a live run holds it; one winner across replicas."""
        result = await self._connection.execute(
            update(purge_agent)
            .where(
                purge_agent.c.id == AGENT,
                or_(purge_agent.c.running_run_id.is_(None), purge_agent.c.lease_until <= now),
            )
            .values(running_run_id=run_id, lease_until=lease_until)
        )
        return result.rowcount == 1

    async def renew(self, run_id: UUID, lease_until: datetime) -> bool:
        result = await self._connection.execute(
            update(purge_agent)
            .where(purge_agent.c.id == AGENT, purge_agent.c.running_run_id == run_id)
            .values(lease_until=lease_until)
        )
        return result.rowcount == 1

    async def release(self, run_id: UUID) -> None:
        await self._connection.execute(
            update(purge_agent)
            .where(purge_agent.c.id == AGENT, purge_agent.c.running_run_id == run_id)
            .values(running_run_id=None, lease_until=None)
        )

    async def move_due_time(self, seen: datetime | None, next_run_at: datetime) -> bool:
        """Set the next due time if it is still `seen`: of two replicas, one moves it."""
        due = purge_agent.c.next_run_at
        result = await self._connection.execute(
            update(purge_agent)
            .where(purge_agent.c.id == AGENT, due.is_(None) if seen is None else due == seen)
            .values(next_run_at=next_run_at)
        )
        return result.rowcount == 1

    # The policy.

    async def policy(self) -> PurgePolicy:
        r = (await self._connection.execute(select(purge_policy))).one()
        return PurgePolicy(
            r.retention_days_won,
            r.retention_days_lost,
            r.batch_size,
            r.schedule,
            r.version,
            r.journal,
        )

    async def save_policy(self, policy: PurgePolicy, by: str, now: datetime) -> None:
        await self._connection.execute(
            update(purge_policy).values(
                retention_days_won=policy.retention_days_won,
                retention_days_lost=policy.retention_days_lost,
                batch_size=policy.batch_size,
                schedule=policy.schedule,
                journal=policy.journal,
                version=policy.version,
                updated_by=by,
                updated_at=now,
            )
        )

    # The projection of deals and their quotes.

    async def deal(self, opportunity_id: UUID) -> KnownDeal | None:
        r = await _KNOWN.get(self._connection, opportunity_id, held=self._held_deals)
        return _to_deal(r) if r else None

    async def lock_deals_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock these deals' rows in one statement and hold them until `write_held`."""
        await _KNOWN.lock_ahead(self._connection, opportunity_ids, self._held_deals)

    async def write_held(self) -> None:
        await _KNOWN.write_held(self._connection, self._held_deals)
        await self._add_quotes()

    async def lock_or_add_deal(self, unseen: KnownDeal, now: datetime) -> KnownDeal:
        """The deal's row, locked until commit (an event's read-merge-write never
        interleaves with another's); `unseen` is added first when there is none."""
        row = await _KNOWN.lock_or_add(self._connection, _deal_row(unseen, now), self._held_deals)
        return _to_deal(row)

    async def save_deal(self, deal: KnownDeal, now: datetime) -> None:
        await _KNOWN.save(self._connection, _deal_row(deal, now), self._held_deals)

    def _past_retention(self, cutoffs: dict[Stage, datetime]) -> Any:
        return or_(
            *(
                and_(known_deals.c.stage == stage.value, known_deals.c.closed_at < cutoff)
                for stage, cutoff in cutoffs.items()
            )
        )

    def _not_started(self) -> Any:
        return (
            ~select(deal_purges.c.opportunity_id)
            .where(deal_purges.c.opportunity_id == known_deals.c.opportunity_id)
            .exists()
        )

    async def candidates(
        self, cutoffs: dict[Stage, datetime], after: tuple[datetime, UUID] | None, limit: int
    ) -> list[KnownDeal]:
        """Closed deals past retention with no purge under way, oldest first, after `after`."""
        query = select(known_deals).where(self._past_retention(cutoffs), self._not_started())
        if after is not None:
            closed_at, opportunity_id = after
            query = query.where(
                or_(
                    known_deals.c.closed_at > closed_at,
                    and_(
                        known_deals.c.closed_at == closed_at,
                        known_deals.c.opportunity_id > opportunity_id,
                    ),
                )
            )
        rows = await self._connection.execute(
            query.order_by(known_deals.c.closed_at, known_deals.c.opportunity_id).limit(limit)
        )
        return [_to_deal(r) for r in rows]

    async def backlog(self, cutoffs: dict[Stage, datetime]) -> int:
        """Deals a run would purge now: past retention, not on hold, not under way."""
        held = select(holds.c.opportunity_id).where(
            holds.c.opportunity_id == known_deals.c.opportunity_id
        )
        count = await self._connection.scalar(
            select(func.count())
            .select_from(known_deals)
            .where(self._past_retention(cutoffs), self._not_started(), ~held.exists())
        )
        return int(count or 0)

    async def planned(self, cutoffs: dict[Stage, datetime], now: datetime, dry_run: bool) -> int:
        """How many deals a run starting now will examine: the candidates (held ones too:
        they are examined and skipped) and, for a real run, the unfinished deals it takes
        up under its own id (quotes purged, failures due a retry, not on hold)."""
        candidates = await self._connection.scalar(
            select(func.count())
            .select_from(known_deals)
            .where(self._past_retention(cutoffs), self._not_started())
        )
        if dry_run:
            return int(candidates or 0)
        held = select(holds.c.opportunity_id).where(
            holds.c.opportunity_id == deal_purges.c.opportunity_id
        )
        state = deal_purges.c.state
        taken_up = await self._connection.scalar(
            select(func.count())
            .select_from(deal_purges)
            .where(
                or_(
                    state == PurgeState.QUOTES_PURGED.value,
                    and_(state == PurgeState.FAILED.value, deal_purges.c.next_attempt_at <= now),
                ),
                ~held.exists(),
            )
        )
        return int(candidates or 0) + int(taken_up or 0)

    async def add_quote(self, quote_id: UUID, opportunity_id: UUID) -> None:
        self._quotes_to_add.add(
            {"quote_id": quote_id, "opportunity_id": opportunity_id, "purged_at": None}
        )

    async def _add_quotes(self) -> None:
        await self._quotes_to_add.write(self._connection, _ADD_QUOTE[self._connection.dialect.name])

    async def mark_quote_purged(self, quote_id: UUID, opportunity_id: UUID, at: datetime) -> None:
        await self._add_quotes()
        row = {"quote_id": quote_id, "opportunity_id": opportunity_id, "purged_at": at}
        await self._connection.execute(
            _upsert_rows(self._connection, known_quotes, list(row), ["quote_id"]), row
        )

    async def live_quotes(self, opportunity_id: UUID) -> list[UUID]:
        await self._add_quotes()
        rows = await self._connection.scalars(
            select(known_quotes.c.quote_id).where(
                known_quotes.c.opportunity_id == opportunity_id, known_quotes.c.purged_at.is_(None)
            )
        )
        return list(rows)

    # Holds.

    async def hold(self, opportunity_id: UUID) -> Hold | None:
        r = (
            await self._connection.execute(
                select(holds).where(holds.c.opportunity_id == opportunity_id)
            )
        ).first()
        return Hold(r.opportunity_id, r.reason, r.placed_by, r.placed_at) if r else None

    async def held_among(self, ids: Sequence[UUID]) -> set[UUID]:
        if not ids:
            return set()
        found = await self._connection.scalars(
            select(holds.c.opportunity_id).where(holds.c.opportunity_id.in_(list(ids)))
        )
        return set(found)

    async def place_hold(self, hold: Hold) -> None:
        await self._connection.execute(
            _upsert(
                self._connection,
                holds,
                {
                    "opportunity_id": hold.opportunity_id,
                    "reason": hold.reason,
                    "placed_by": hold.placed_by,
                    "placed_at": hold.placed_at,
                },
                ["opportunity_id"],
            )
        )

    async def release_hold(self, opportunity_id: UUID) -> bool:
        result = await self._connection.execute(
            delete(holds).where(holds.c.opportunity_id == opportunity_id)
        )
        return result.rowcount == 1

    async def holds_list(self) -> list[Hold]:
        rows = await self._connection.execute(select(holds).order_by(holds.c.placed_at))
        return [Hold(r.opportunity_id, r.reason, r.placed_by, r.placed_at) for r in rows]

    # Each deal's purge.

    async def deal_purge(self, opportunity_id: UUID) -> DealPurge | None:
        query = select(deal_purges).where(deal_purges.c.opportunity_id == opportunity_id)
        if self._connection.dialect.name == "postgresql":
            query = query.with_for_update()
        r = (await self._connection.execute(query)).first()
        return _to_deal_purge(r) if r else None

    async def save_deal_purge(self, purge: DealPurge) -> None:
        await self.save_deal_purges([purge])

    async def save_deal_purges(self, purges: Sequence[DealPurge]) -> None:
        """Write the deals' purges, all in one round trip."""
        if not purges:
            return
        rows = [_deal_purge_row(p) for p in purges]
        await self._connection.execute(
            _upsert_rows(self._connection, deal_purges, list(rows[0]), ["opportunity_id"]),
            rows,
        )

    async def unfinished(self, now: datetime, limit: int) -> list[DealPurge]:
        """Deals a run takes up: overdue waits, quotes purged, and failures due a retry;
        not those on hold, which would fill every batch and keep the others waiting."""
        state = deal_purges.c.state
        held = select(holds.c.opportunity_id).where(
            holds.c.opportunity_id == deal_purges.c.opportunity_id
        )
        rows = await self._connection.execute(
            select(deal_purges)
            .where(
                ~held.exists(),
                or_(
                    and_(
                        state.in_(
                            [PurgeState.QUOTES_REQUESTED.value, PurgeState.OPPORTUNITY_REQUESTED]
                        ),
                        deal_purges.c.deadline <= now,
                    ),
                    state == PurgeState.QUOTES_PURGED.value,
                    and_(state == PurgeState.FAILED.value, deal_purges.c.next_attempt_at <= now),
                ),
            )
            .order_by(deal_purges.c.updated_at, deal_purges.c.opportunity_id)
            .limit(limit)
        )
        return [_to_deal_purge(r) for r in rows]

    async def waiting_count_of_run(self, run_id: UUID) -> int:
        """How many deals of the run wait for another service's answer (a run asks this
        every poll while its batch goes). A deal whose quotes are purged waits for no one:
        it is there only while on hold, and a run must not wait for the hold to go."""
        count = await self._connection.scalar(
            select(func.count())
            .select_from(deal_purges)
            .where(
                deal_purges.c.run_id == run_id,
                deal_purges.c.state.in_([s.value for s in WAITING]),
            )
        )
        return int(count or 0)

    async def overdue_of_run(self, run_id: UUID, now: datetime) -> list[DealPurge]:
        """The deals of the run waiting for an answer past their deadline (`is_overdue`)."""
        rows = await self._connection.execute(
            select(deal_purges).where(
                deal_purges.c.run_id == run_id,
                deal_purges.c.state.in_([s.value for s in WAITING]),
                deal_purges.c.deadline <= now,
            )
        )
        return [_to_deal_purge(r) for r in rows]

    async def waiting_of_run(self, run_id: UUID) -> list[DealPurge]:
        rows = await self._connection.execute(
            select(deal_purges).where(
                deal_purges.c.run_id == run_id,
                deal_purges.c.state.notin_([PurgeState.PURGED.value, PurgeState.FAILED.value]),
            )
        )
        return [_to_deal_purge(r) for r in rows]

    async def purge_states(self) -> dict[str, int]:
        rows = await self._connection.execute(
            select(deal_purges.c.state, func.count()).group_by(deal_purges.c.state)
        )
        return {state: int(count) for state, count in rows}

    async def stuck(self, limit: int = 50) -> list[DealPurge]:
        rows = await self._connection.execute(
            select(deal_purges)
            .where(deal_purges.c.state == PurgeState.FAILED.value)
            .order_by(deal_purges.c.updated_at)
            .limit(limit)
        )
        return [_to_deal_purge(r) for r in rows]

    # Runs and their items.

    async def add_run(self, run: PurgeRun) -> None:
        await self._connection.execute(insert(purge_runs).values(**_run_row(run)))

    async def save_run(self, run: PurgeRun) -> None:
        await self._connection.execute(
            update(purge_runs).where(purge_runs.c.id == run.id).values(**_run_row(run))
        )

    async def run(self, run_id: UUID) -> PurgeRun | None:
        r = (
            await self._connection.execute(select(purge_runs).where(purge_runs.c.id == run_id))
        ).first()
        return _to_run(r) if r else None

    async def runs(self, limit: int) -> list[PurgeRun]:
        rows = await self._connection.execute(
            select(purge_runs)
            .order_by(purge_runs.c.started_at.desc(), purge_runs.c.id)
            .limit(limit)
        )
        return [_to_run(r) for r in rows]

    async def last_finished_run(self) -> PurgeRun | None:
        r = (
            await self._connection.execute(
                select(purge_runs)
                .where(purge_runs.c.finished_at.is_not(None))
                .order_by(purge_runs.c.finished_at.desc())
                .limit(1)
            )
        ).first()
        return _to_run(r) if r else None

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
        await self._put_item_rows(
            [_item_row(run_id, opportunity_id, outcome, now, reason, quotes_purged)]
        )

    async def put_items(
        self,
        run_id: UUID,
        now: datetime,
        items: Sequence[tuple[UUID, ItemOutcome, str | None]],
    ) -> None:
        """`put_item` for many deals, (opportunity id, outcome, reason) each, in one round
        trip: a run lists a whole batch's deals at once."""
        await self._put_item_rows(
            [_item_row(run_id, deal, outcome, now, reason, 0) for deal, outcome, reason in items]
        )

    async def _put_item_rows(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self._connection.execute(
                _upsert_rows(
                    self._connection, purge_run_items, list(rows[0]), ["run_id", "opportunity_id"]
                ),
                rows,
            )

    async def items(self, run_id: UUID) -> list[RunItem]:
        rows = await self._connection.execute(
            select(purge_run_items)
            .where(purge_run_items.c.run_id == run_id)
            .order_by(purge_run_items.c.updated_at, purge_run_items.c.opportunity_id)
        )
        return [
            RunItem(
                r.opportunity_id, ItemOutcome(r.outcome), r.reason, r.quotes_purged, r.updated_at
            )
            for r in rows
        ]

    async def item_counts(self, run_id: UUID) -> dict[ItemOutcome, int]:
        rows = await self._connection.execute(
            select(purge_run_items.c.outcome, func.count())
            .where(purge_run_items.c.run_id == run_id)
            .group_by(purge_run_items.c.outcome)
        )
        return {ItemOutcome(outcome): int(count) for outcome, count in rows}

    async def journal_entries(self, run_id: UUID) -> list[JournalEntry]:
        """A run's items with each deal's closed time, in the order they were settled."""
        rows = await self._connection.execute(
            select(purge_run_items, known_deals.c.closed_at)
            .select_from(
                purge_run_items.outerjoin(
                    known_deals, known_deals.c.opportunity_id == purge_run_items.c.opportunity_id
                )
            )
            .where(purge_run_items.c.run_id == run_id)
            .order_by(purge_run_items.c.updated_at, purge_run_items.c.opportunity_id)
        )
        return [
            JournalEntry(
                run_id=r.run_id,
                opportunity_id=r.opportunity_id,
                outcome=ItemOutcome(r.outcome),
                closed_at=r.closed_at,
                quotes_purged=r.quotes_purged,
                reason=r.reason,
                at=r.updated_at,
            )
            for r in rows
        ]


def _to_deal(r: Row[Any]) -> KnownDeal:
    return KnownDeal(
        r.opportunity_id,
        Stage(r.stage),
        r.closed_at,
        tuple(r.owners),
        r.team_id,
        AppliedSequences.from_document(r.applied_sequences),
        r.created_by or "",
        tuple(shares_from_document(r.shares)),
    )


def _deal_row(deal: KnownDeal, now: datetime) -> dict[str, Any]:
    return {
        "opportunity_id": deal.opportunity_id,
        "stage": deal.stage.value,
        "closed_at": deal.closed_at,
        "owners": list(deal.owners),
        "team_id": deal.team_id,
        "created_by": deal.created_by,
        "shares": shares_to_document(deal.shares),
        "applied_sequences": deal.sequences.to_document(),
        "updated_at": now,
    }


def _item_row(
    run_id: UUID,
    opportunity_id: UUID,
    outcome: ItemOutcome,
    now: datetime,
    reason: str | None,
    quotes_purged: int,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "opportunity_id": opportunity_id,
        "outcome": outcome.value,
        "reason": reason,
        "quotes_purged": quotes_purged,
        "updated_at": now,
    }


def _deal_purge_row(purge: DealPurge) -> dict[str, Any]:
    return {
        "opportunity_id": purge.opportunity_id,
        "run_id": purge.run_id,
        "state": purge.state.value,
        "failed_step": purge.failed_step,
        "attempts": purge.attempts,
        "deadline": purge.deadline,
        "next_attempt_at": purge.next_attempt_at,
        "last_error": purge.last_error,
        "quotes_purged": purge.quotes_purged,
        "updated_at": purge.updated_at,
    }


def _to_deal_purge(r: Row[Any]) -> DealPurge:
    return DealPurge(
        opportunity_id=r.opportunity_id,
        run_id=r.run_id,
        state=PurgeState(r.state),
        failed_step=r.failed_step,
        attempts=r.attempts,
        deadline=r.deadline,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
        quotes_purged=r.quotes_purged,
        updated_at=r.updated_at,
    )


def _run_row(run: PurgeRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "status": run.status.value,
        "policy": {
            "retention_days_won": run.policy.retention_days_won,
            "retention_days_lost": run.policy.retention_days_lost,
            "batch_size": run.policy.batch_size,
            "schedule": run.policy.schedule,
            "version": run.policy.version,
            "journal": run.policy.journal,
        },
        "started_by": run.started_by,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "planned": run.planned,
        "examined": run.examined,
        "purged": run.purged,
        "would_purge": run.would_purge,
        "skipped": run.skipped,
        "failed": run.failed,
        "error": run.error,
    }


def _to_run(r: Row[Any]) -> PurgeRun:
    return PurgeRun(
        id=r.id,
        trigger=r.trigger,
        dry_run=r.dry_run,
        policy=PurgePolicy(**r.policy),
        started_by=r.started_by,
        started_at=r.started_at,
        status=RunStatus(r.status),
        finished_at=r.finished_at,
        examined=r.examined,
        purged=r.purged,
        would_purge=r.would_purge,
        skipped=r.skipped,
        failed=r.failed,
        error=r.error,
        planned=r.planned,
    )
