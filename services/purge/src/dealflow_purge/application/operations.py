"""What operators do to the agent besides running it: pause, resume, policy, holds."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from dealflow_common.errors import NotFound
from dealflow_purge.adapters.store import Hold
from dealflow_purge.application.agent import UnitOfWorkFactory
from dealflow_purge.domain.policy import CronSchedule, PurgePolicy, checked_policy
from dealflow_purge.domain.runs import AgentNotPaused


class OpportunityUnknown(NotFound):
    def __init__(self, opportunity_id: UUID) -> None:
        super().__init__("opportunity", opportunity_id)


class HoldNotFound(NotFound):
    def __init__(self, opportunity_id: UUID) -> None:
        super().__init__("hold", opportunity_id)


async def pause(unit_of_work: UnitOfWorkFactory) -> None:
    """Stop scheduled and new runs; a run going stops before its next batch."""
    async with unit_of_work() as uow:
        await uow.store.set_paused(True)
        await uow.commit()


async def resume(unit_of_work: UnitOfWorkFactory) -> None:
    async with unit_of_work() as uow:
        if not (await uow.store.agent()).paused:
            raise AgentNotPaused()
        await uow.store.set_paused(False)
        await uow.commit()


async def change_policy(
    unit_of_work: UnitOfWorkFactory,
    cron: CronSchedule,
    *,
    retention_days_won: int,
    retention_days_lost: int,
    batch_size: int,
    schedule: str,
    max_batch_size: int,
    by: str,
    journal: bool = False,
) -> PurgePolicy:
    async with unit_of_work() as uow:
        current = await uow.store.policy()
        now = uow.clock()
        policy = checked_policy(
            retention_days_won=retention_days_won,
            retention_days_lost=retention_days_lost,
            batch_size=batch_size,
            schedule=schedule,
            version=current.version + 1,
            max_batch_size=max_batch_size,
            cron=cron,
            now=now,
            journal=journal,
        )
        if replace(policy, version=current.version) == current:
            return current
        await uow.store.save_policy(policy, by, now)
        agent = await uow.store.agent()
        await uow.store.move_due_time(agent.next_run_at, cron.next_after(schedule, now))
        await uow.commit()
    return policy


async def place_hold(
    unit_of_work: UnitOfWorkFactory, opportunity_id: UUID, reason: str, by: str
) -> Hold:
    """A legal hold: the deal is not purged, nor taken further if its purge has begun."""
    async with unit_of_work() as uow:
        if await uow.store.deal(opportunity_id) is None:
            raise OpportunityUnknown(opportunity_id)
        hold = Hold(opportunity_id, reason, by, uow.clock())
        await uow.store.place_hold(hold)
        await uow.commit()
    return hold


async def release_hold(unit_of_work: UnitOfWorkFactory, opportunity_id: UUID) -> None:
    async with unit_of_work() as uow:
        if not await uow.store.release_hold(opportunity_id):
            raise HoldNotFound(opportunity_id)
        await uow.commit()
