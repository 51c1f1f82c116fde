"""The purge agent: runs on schedule or on demand, one at a time, in bounded batches.

A run first takes the agent's lock (a row with a lease it renews), so of any number of
replicas one runs. It then takes up unfinished work left by earlier runs (answers that
never came, deals whose quotes are purged, failures due a retry), and purges new
eligible deals a batch at a time: each batch's quotes are requested, and the run waits
until every deal of the batch is purged or failed before the next batch. The steps
after `quote.purge_requested` are driven by the answers (see `progress`). A run whose
process stops keeps its lease until it runs out; the next run then marks it
interrupted and takes up its deals, which are all in `deal_purges`: nothing is
requested twice in one state, nothing is left half-done.

With the policy's `journal` flag on, a real run writes its journal (`domain.journal`)
just before it commits its end; a run marked interrupted gets its journal from the run
that takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.errors import NotFound
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.application.unit_of_work import PurgeUnitOfWork
from dealflow_purge.domain.eligibility import closed_before
from dealflow_purge.domain.journal import RunJournal
from dealflow_purge.domain.policy import CronSchedule, PurgePolicy
from dealflow_purge.domain.progress import Backoff, DealPurge, PurgeState, Trigger
from dealflow_purge.domain.runs import AgentPaused, ItemOutcome, PurgeRun, RunStatus

log = logging.getLogger(__name__)

UnitOfWorkFactory = Callable[[], PurgeUnitOfWork]
SCHEDULER = "system:schedule"


class RunNotFound(NotFound):
    def __init__(self, run_id: UUID) -> None:
        super().__init__("purge run", run_id)


@dataclass(frozen=True)
class AgentConfig:
    lease: timedelta
    answer_within: timedelta
    backoff: Backoff
    poll_interval: float
    max_batch_size: int


def cutoffs(policy: PurgePolicy, now: datetime) -> dict[Stage, datetime]:
    return {s: closed_before(policy, s, now) for s in (Stage.CLOSED_WON, Stage.CLOSED_LOST)}


class PurgeAgent:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        cron: CronSchedule,
        config: AgentConfig,
        metrics: PurgeMetrics,
        journal: RunJournal | None = None,
    ) -> None:
        self._uow = unit_of_work
        self._cron = cron
        self.config = config
        self._metrics = metrics
        self._journal = journal

    async def request_run(
        self, *, trigger: Literal["schedule", "operator"], dry_run: bool, by: str
    ) -> tuple[PurgeRun, bool]:
        """Start a run, or answer with the one going: (run, whether it was started now)."""
        interrupted: PurgeRun | None = None
        async with self._uow() as uow:
            agent = await uow.store.agent()
            now = uow.clock()
            if agent.running_run_id is not None and agent.lease_until and agent.lease_until > now:
                running = await uow.store.run(agent.running_run_id)
                if running is not None:
                    return running, False
            if agent.paused and not dry_run:
                raise AgentPaused()
            policy = await uow.store.policy()
            run = PurgeRun.start(trigger=trigger, dry_run=dry_run, policy=policy, by=by, now=now)
            if not await uow.store.claim(run.id, now, now + self.config.lease):
                return await self._running(uow), False
            if agent.running_run_id is not None:
                interrupted = await self._interrupted(uow, agent.running_run_id, now)
            run.planned = await uow.store.planned(cutoffs(policy, now), now, dry_run)
            await uow.store.add_run(run)
            uow.collect(run)
            await uow.commit()
        if interrupted is not None and self._journal_wanted(interrupted):
            async with self._uow() as uow:
                problem = await self._write_journal(uow, interrupted)
            if problem:
                log.error("purge run %s: %s", interrupted.id, problem)
        return run, True

    async def _running(self, uow: PurgeUnitOfWork) -> PurgeRun:
        agent = await uow.store.agent()
        run = await uow.store.run(agent.running_run_id) if agent.running_run_id else None
        if run is None:
            raise RuntimeError("the agent's lock is held by no known run")
        return run

    async def _interrupted(
        self, uow: PurgeUnitOfWork, run_id: UUID, now: datetime
    ) -> PurgeRun | None:
        old = await uow.store.run(run_id)
        if old is not None and old.status == RunStatus.RUNNING:
            old.status, old.finished_at = RunStatus.INTERRUPTED, now
            old.error = "its process stopped; the next run took up its deals"
            await uow.store.save_run(old)
            self._metrics.runs.labels("interrupted", str(old.dry_run).lower()).inc()
            return old
        return None

    def _journal_wanted(self, run: PurgeRun) -> bool:
        return run.policy.journal and not run.dry_run

    async def _write_journal(self, uow: PurgeUnitOfWork, run: PurgeRun) -> str | None:
        """Write the run's journal whole; what went wrong, or None when it was written."""
        if self._journal is None:
            return "the policy asks for a journal but no journal directory is set up"
        entries = await uow.store.journal_entries(run.id)
        try:
            where = await asyncio.to_thread(self._journal.write, run.id, entries)
        except OSError as error:
            log.exception("purge run %s: its journal could not be written", run.id)
            return f"journal not written: {error}"
        log.info("purge run %s: journal of %d deals at %s", run.id, len(entries), where)
        return None

    async def execute(self, run_id: UUID) -> PurgeRun:
        """Carry a started run to its end (it holds the lock), then release the lock."""
        try:
            async with self._uow() as uow:
                run = await uow.store.run(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if run.dry_run:
                await self._examine(run, dry_run=True)
            else:
                await self._take_up_unfinished(run)
                await self._examine(run, dry_run=False)
            return await self._finish(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "purge run %s failed; its lease runs out and the next run goes on", run_id
            )
            raise

    async def _take_up_unfinished(self, run: PurgeRun) -> None:
        seen: set[UUID] = set()
        while True:
            async with self._uow() as uow:
                now = uow.clock()
                await self._renew(uow, run, now)
                batch = [
                    p
                    for p in await uow.store.unfinished(now, run.policy.batch_size)
                    if p.opportunity_id not in seen
                ]
                if not batch:
                    return
                held = await uow.store.held_among([p.opportunity_id for p in batch])
                for purge in batch:
                    seen.add(purge.opportunity_id)
                    if purge.opportunity_id in held:
                        continue
                    self._advance(uow, purge, run, now)
                    await uow.store.save_deal_purge(purge)
                    await self._item_for(uow, run.id, purge, now)
                await uow.commit()
            await self._settle(run)

    def _advance(
        self, uow: PurgeUnitOfWork, purge: DealPurge, run: PurgeRun, now: datetime
    ) -> None:
        policy = run.policy.snapshot()
        if purge.is_overdue(now):
            waited = "quote" if purge.state == PurgeState.QUOTES_REQUESTED else "opportunity"
            purge.fail(f"no answer from the {waited} service in time", now, self.config.backoff)
            self._metrics.failures.labels(purge.failed_step or waited).inc()
        elif purge.state == PurgeState.QUOTES_PURGED:
            purge.request_opportunity(run.id, policy, now, self.config.answer_within)
        elif purge.state == PurgeState.FAILED:
            if purge.retry_step() == Trigger.REQUEST_OPPORTUNITY:
                purge.request_opportunity(run.id, policy, now, self.config.answer_within)
            else:
                purge.request_quotes(run.id, policy, now, self.config.answer_within)
        uow.collect(purge)

    async def _item_for(
        self, uow: PurgeUnitOfWork, run_id: UUID, purge: DealPurge, now: datetime
    ) -> None:
        if purge.state == PurgeState.FAILED:
            await uow.store.put_item(
                purge.run_id, purge.opportunity_id, ItemOutcome.FAILED, now, reason=purge.last_error
            )
        else:
            await uow.store.put_item(
                run_id,
                purge.opportunity_id,
                ItemOutcome.IN_PROGRESS,
                now,
                quotes_purged=purge.quotes_purged,
            )

    async def _examine(self, run: PurgeRun, *, dry_run: bool) -> None:
        after: tuple[datetime, UUID] | None = None
        while True:
            async with self._uow() as uow:
                now = uow.clock()
                await self._renew(uow, run, now)
                if not dry_run and (await uow.store.agent()).paused:
                    return
                batch = await uow.store.candidates(
                    cutoffs(run.policy, run.started_at), after, run.policy.batch_size
                )
                if not batch:
                    return
                after = (batch[-1].closed_at or now, batch[-1].opportunity_id)
                held = await uow.store.held_among([d.opportunity_id for d in batch])
                snapshot = run.policy.snapshot()
                purges: list[DealPurge] = []
                items: list[tuple[UUID, ItemOutcome, str | None]] = []
                for deal in batch:
                    if deal.opportunity_id in held:
                        items.append((deal.opportunity_id, ItemOutcome.SKIPPED, "on_hold"))
                    elif dry_run:
                        items.append((deal.opportunity_id, ItemOutcome.WOULD_PURGE, None))
                    else:
                        purge = DealPurge(deal.opportunity_id, run.id)
                        purge.request_quotes(run.id, snapshot, now, self.config.answer_within)
                        purges.append(purge)
                        uow.collect(purge)
                        items.append((deal.opportunity_id, ItemOutcome.IN_PROGRESS, None))
                # The whole batch in two round trips, not two per deal.
                await uow.store.save_deal_purges(purges)
                await uow.store.put_items(run.id, now, items)
                await uow.commit()
            if not dry_run:
                await self._settle(run)

    async def _settle(self, run: PurgeRun) -> None:
        """Wait until every deal this run requested is purged or failed (failing late ones)."""
        while True:
            async with self._uow() as uow:
                now = uow.clock()
                await self._renew(uow, run, now)
                # Counted, and only the overdue ones read: this runs every poll while up
                # to a batch of deals is under way.
                waiting = await uow.store.waiting_count_of_run(run.id)
                overdue = await uow.store.overdue_of_run(run.id, now) if waiting else []
                for purge in overdue:
                    self._advance(uow, purge, run, now)
                    await uow.store.save_deal_purge(purge)
                    await self._item_for(uow, run.id, purge, now)
                await uow.commit()
            if waiting <= len(overdue):
                return
            await asyncio.sleep(self.config.poll_interval)

    async def _renew(self, uow: PurgeUnitOfWork, run: PurgeRun, now: datetime) -> None:
        if not await uow.store.renew(run.id, now + self.config.lease):
            raise RuntimeError(f"purge run {run.id} lost the agent's lock")

    async def _finish(self, run: PurgeRun) -> PurgeRun:
        async with self._uow() as uow:
            now = uow.clock()
            counts = await uow.store.item_counts(run.id)
            run.examined = sum(counts.values())
            run.purged = counts.get(ItemOutcome.PURGED, 0)
            run.would_purge = counts.get(ItemOutcome.WOULD_PURGE, 0)
            run.skipped = counts.get(ItemOutcome.SKIPPED, 0)
            run.failed = counts.get(ItemOutcome.FAILED, 0)
            if self._journal_wanted(run):
                # Before the end is committed: should the commit fail, the run stays
                # running and the one taking over writes this journal again, whole.
                run.error = await self._write_journal(uow, run)
            run.finish(now)
            await uow.store.save_run(run)
            uow.collect(run)
            await uow.store.release(run.id)
            backlog = await uow.store.backlog(cutoffs(await uow.store.policy(), now))
            await uow.commit()
        dry_run = str(run.dry_run).lower()
        self._metrics.runs.labels(run.status.value, dry_run).inc()
        self._metrics.backlog.set(backlog)
        if run.duration_seconds is not None:
            self._metrics.run_duration.observe(run.duration_seconds)
        if run.status == RunStatus.SUCCEEDED and not run.dry_run and run.finished_at:
            self._metrics.last_success.set(run.finished_at.timestamp())
        return run

    async def tick(self) -> PurgeRun | None:
        """The scheduler's beat: start the run that is due, if any, and carry it out.

        The due time is moved in the database by compare-and-set, so of several
        replicas ticking together one starts the run, and a restart runs a due time
        that passed while it was down once, not once per missed beat.
        """
        async with self._uow() as uow:
            now = uow.clock()
            agent = await uow.store.agent()
            policy = await uow.store.policy()
            upcoming = self._cron.next_after(policy.schedule, now)
            if agent.next_run_at is None or agent.paused:
                if agent.next_run_at is None or agent.next_run_at <= now:
                    await uow.store.move_due_time(agent.next_run_at, upcoming)
                    await uow.commit()
                return None
            if agent.next_run_at > now:
                return None
            if not await uow.store.move_due_time(agent.next_run_at, upcoming):
                return None
            await uow.commit()
        run, started = await self.request_run(trigger="schedule", dry_run=False, by=SCHEDULER)
        return await self.execute(run.id) if started else None

    async def reschedule(self) -> None:
        """After a policy change: the next run follows the new schedule."""
        async with self._uow() as uow:
            now = uow.clock()
            agent = await uow.store.agent()
            policy = await uow.store.policy()
            await uow.store.move_due_time(
                agent.next_run_at, self._cron.next_after(policy.schedule, now)
            )
            await uow.commit()
