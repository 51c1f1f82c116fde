"""The scheduled work: due steps, and stale deals. APScheduler calls these on a tick.

Due times live in the database (`enrollments.next_due_at`), so a restart neither skips
a step nor runs one twice, and a step that fell due while the service was down runs at
the first tick after it is back. A batch of due enrollments is taken with `FOR UPDATE
SKIP LOCKED` (PostgreSQL; SQLite has one writer at a time): replicas ticking together
take different enrollments. Running a step, recording it and the events it causes are
one transaction: a crash before the commit leaves the step due, and after it, done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from dealflow_sequence.application.unit_of_work import SequenceUnitOfWork
from dealflow_sequence.domain.deal import KnownDeal
from dealflow_sequence.domain.definitions import ExitCondition
from dealflow_sequence.domain.enrollment import SYSTEM, Enrollment, StepRun
from dealflow_sequence.domain.tasks import Task

log = logging.getLogger(__name__)

UnitOfWorkFactory = Callable[[], SequenceUnitOfWork]


async def run_due_steps(unit_of_work: UnitOfWorkFactory, batch: int = 200) -> int:
    """Run every step due now, a batch per transaction; how many steps ran.

    The service ticks every quarter of a second by default, and most ticks find nothing
    due: a tick looks first, in one statement without a transaction (one round trip,
    not the three of a transaction that locks nothing). A step that falls due after the
    look waits for the next tick, as one falling due after the batch's read always did."""
    async with unit_of_work().one_write() as uow:
        if not await uow.enrollments.any_due(uow.clock()):
            return 0
    ran = 0
    while True:
        async with unit_of_work() as uow:
            now = uow.clock()
            due = await uow.enrollments.due(now, batch)
            ran += await _run_steps(uow, due, now)
            await uow.commit()
        if len(due) < batch:
            return ran


async def _run_steps(uow: SequenceUnitOfWork, due: list[Enrollment], now: datetime) -> int:
    """Run the batch's due steps; how many ran.

    The rows are read and written a statement per table for the whole batch, not per
    step: per-step round trips made a tick's batch cost more than the tick on a busy
    machine (`make bench-sequences`). Each enrollment's events are collected as before:
    its task's, then its own."""
    if not due:
        return 0
    deals = await uow.deals.get_many([e.opportunity_id for e in due])
    tasks: list[Task] = []
    runs: list[tuple[UUID, StepRun]] = []
    for enrollment in due:
        definition = await uow.sequences.version(
            enrollment.sequence_id, enrollment.sequence_version
        )
        deal = deals.get(enrollment.opportunity_id) or KnownDeal.unseen(
            enrollment.opportunity_id, now
        )
        if not deal.is_open and definition.exits_on(ExitCondition.DEAL_CLOSED):
            # The close is known but its handler has not ended this enrollment yet.
            enrollment.cancel(
                f"the deal was closed ({deal.stage.value})", SYSTEM, now, by_hand=False
            )
        else:
            outcome = enrollment.run_due_step(definition, deal, now)
            if outcome.task is not None:
                tasks.append(outcome.task)
                uow.collect(outcome.task)
            runs.append((enrollment.id, outcome.run))
        uow.collect(enrollment)
    await uow.tasks.add_all(tasks)
    await uow.enrollments.record_runs(runs)
    await uow.enrollments.save_all(due)
    return len(runs)


async def report_stale_deals(
    unit_of_work: UnitOfWorkFactory, quiet: timedelta, batch: int = 200
) -> int:
    """Report each open deal that is quiet or past its close date, once; how many reports."""
    reported = 0
    while True:
        async with unit_of_work() as uow:
            now = uow.clock()
            candidates = await uow.deals.stale_candidates(now, quiet, batch)
            in_batch = 0
            for deal in candidates:
                has_task = await uow.deals.has_open_future_task(deal.id, now)
                for reason in deal.stale_reasons(
                    now=now, quiet=quiet, has_open_future_task=has_task
                ):
                    deal.report_stale(reason, now)
                    in_batch += 1
                if deal.events:
                    await uow.deals.save(deal, now)
                    uow.collect(deal)
            await uow.commit()
        reported += in_batch
        if len(candidates) < batch or in_batch == 0:
            return reported
