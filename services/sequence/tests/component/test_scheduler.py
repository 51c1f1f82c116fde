"""The due-step job: two replicas ticking at once, and a crash between running a step and
recording it, never run a step twice; nothing due is lost."""

from __future__ import annotations

import asyncio

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.uow import UnitOfWork


async def enrolled_deals(service, count: int) -> list[str]:
    await service.define(
        {"after": "PT1M", "action": "task", "title": "First"},
        {"after": "PT1M", "action": "task", "title": "Second"},
    )
    deals = [await service.deal() for _ in range(count)]
    for deal in deals:
        await service.move(deal, Stage.PROPOSAL)
    return deals


async def test_two_tick_runners_at_once_never_run_one_step_twice(service) -> None:
    deals = await enrolled_deals(service, 30)
    service.clock.advance(minutes=1)
    ran = await asyncio.gather(*(service.tick() for _ in range(4)))
    assert sum(ran) == 30
    for deal in deals:
        types = await service.types_of(deal)
        assert types.count("task.created") == 1
        assert types.count("sequence.step_executed") == 1
        assert len(await service.tasks_of(deal)) == 1


async def test_a_crash_before_the_commit_leaves_the_step_due_and_it_then_runs_once(
    service, monkeypatch: pytest.MonkeyPatch
) -> None:
    (deal,) = await enrolled_deals(service, 1)
    service.clock.advance(minutes=1)
    real_commit = UnitOfWork.commit

    async def crash(self: UnitOfWork) -> None:
        raise ConnectionError("the process died before its commit")

    monkeypatch.setattr(UnitOfWork, "commit", crash)
    with pytest.raises(ConnectionError):
        await service.tick()
    monkeypatch.setattr(UnitOfWork, "commit", real_commit)
    assert await service.tasks_of(deal) == []
    assert "task.created" not in await service.types_of(deal)

    await service.tick()  # back up: the step is still due, and runs once
    await service.tick()
    assert len(await service.tasks_of(deal)) == 1
    assert (await service.types_of(deal)).count("sequence.step_executed") == 1


async def test_a_tick_with_nothing_due_only_looks(service) -> None:
    (deal,) = await enrolled_deals(service, 1)  # its first step is due in a minute
    registry = service.platform.registry

    def round_trips() -> float:
        return sum(
            registry.get_sample_value(f"dealflow_db_{counter}_total") or 0.0
            for counter in ("statements", "transaction_statements")
        )

    before = round_trips()
    assert await service.tick() == 0
    if service.engine.dialect.name == "postgresql":
        # The look, with no BEGIN or COMMIT around it (SQLite's BEGIN is a statement).
        assert round_trips() - before == 1
    service.clock.advance(minutes=1)
    await service.tick()  # due now: the look finds it and the batch runs it
    assert len(await service.tasks_of(deal)) == 1
