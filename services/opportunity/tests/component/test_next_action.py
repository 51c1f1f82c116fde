"""The deal's next action follows its follow-up tasks and sequence steps (the sequence
service's events), shows on `GET /opportunities/{id}` and is published as
`opportunity.updated`; a person's next action is kept while it lies ahead."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from dealflow_common.contracts.opportunity import OpportunityPurgeRequested
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.sequence import (
    NextActionData,
    SequenceStepExecuted,
    StepAction,
    TaskCompleted,
    TaskCreated,
    TaskKind,
)
from dealflow_common.testing import until_waiting
from dealflow_opportunity.adapters.repository import OpportunityRepository
from dealflow_opportunity.adapters.tables import deal_tasks, opportunities


def created(deal: str, title: str, due: datetime, task_id: uuid.UUID | None = None) -> TaskCreated:
    return TaskCreated(
        opportunity_id=uuid.UUID(deal),
        task_id=task_id or uuid.uuid4(),
        kind=TaskKind.TASK,
        title=title,
        assignee="alice",
        due_at=due,
        created_by="system:sequence",
        created_at=due - timedelta(days=1),
    )


def completed(deal: str, task_id: uuid.UUID, at: datetime) -> TaskCompleted:
    return TaskCompleted(
        opportunity_id=uuid.UUID(deal), task_id=task_id, completed_by="alice", completed_at=at
    )


def step(deal: str, at: datetime, days: int, note: str) -> SequenceStepExecuted:
    return SequenceStepExecuted(
        opportunity_id=uuid.UUID(deal),
        enrollment_id=uuid.uuid4(),
        sequence_id=uuid.uuid4(),
        step_no=3,
        action=StepAction.NEXT_ACTION,
        due_at=at,
        executed_at=at,
        result="done",
        next_action=NextActionData(date=(at + timedelta(days=days)).date(), note=note),
    )


async def shown(api, deal: str) -> tuple[dict[str, Any] | None, str | None]:
    response = await api.call("GET", f"/opportunities/{deal}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["next_action"], body["next_action_source"]


def day(moment: datetime, days: int = 0) -> str:
    return (moment + timedelta(days=days)).date().isoformat()


async def test_the_earliest_open_task_is_the_next_action_and_is_published(api) -> None:
    deal = str((await api.open())["id"])
    now = api.clock()
    call, demo = uuid.uuid4(), uuid.uuid4()
    await api.consume(created(deal, "Demo", now + timedelta(days=5), demo))
    assert await shown(api, deal) == ({"date": day(now, 5), "note": "Demo"}, "task")
    await api.consume(created(deal, "Call the CFO", now + timedelta(days=2), call))
    assert await shown(api, deal) == ({"date": day(now, 2), "note": "Call the CFO"}, "task")

    update = (await api.envelopes_of(deal))[-1]
    assert update["type"] == "opportunity.updated"
    assert update["data"]["changed_fields"] == ["next_action"]
    assert update["data"]["updated_by"] == "system:sequence"
    assert update["data"]["opportunity"]["next_action"]["note"] == "Call the CFO"

    await api.consume(completed(deal, call, now))
    assert await shown(api, deal) == ({"date": day(now, 5), "note": "Demo"}, "task")
    await api.consume(completed(deal, demo, now))
    assert await shown(api, deal) == (None, None)
    assert [t for t, _ in await api.events_of(deal)] == ["opportunity.created"] + [
        "opportunity.updated"
    ] * 4


async def test_a_completion_read_before_its_creation_does_not_reopen_the_task(api) -> None:
    deal = str((await api.open())["id"])
    now = api.clock()
    task_id = uuid.uuid4()
    # The relay published the completion (sequence 3) before the creation (2) got through.
    await api.consume(completed(deal, task_id, now), sequence=3)
    await api.consume(created(deal, "Call", now + timedelta(days=1), task_id), sequence=2)
    assert await shown(api, deal) == (None, None)
    assert [t for t, _ in await api.events_of(deal)] == ["opportunity.created"]

    event_id = uuid.uuid4()
    later = created(deal, "Demo", now + timedelta(days=3))
    await api.consume(later, event_id=event_id)
    before = await api.written()
    await api.consume(later, event_id=event_id)  # a duplicate: the inbox has it
    assert await api.written() == before


async def test_a_next_action_set_by_hand_is_kept_while_it_lies_ahead(api) -> None:
    now = api.clock()
    mine = {"date": day(now, 4), "note": "Send the contract"}
    deal = str((await api.open(next_action=mine))["id"])
    assert await shown(api, deal) == (mine, "hand")

    await api.consume(created(deal, "Call", now + timedelta(days=1)))
    assert await shown(api, deal) == (mine, "hand")

    api.clock.advance(days=5)  # the person's date has passed, the call is overdue
    await api.consume(created(deal, "Demo", now + timedelta(days=8)))
    assert await shown(api, deal) == ({"date": day(now, 1), "note": "Call"}, "task")

    cleared = await api.call("PATCH", f"/opportunities/{deal}", {"next_action": mine})
    assert (cleared.json()["next_action"], cleared.json()["next_action_source"]) == (mine, "hand")
    cleared = await api.call("PATCH", f"/opportunities/{deal}", {"next_action": None})
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert (body["next_action"], body["next_action_source"]) == (
        {"date": day(now, 1), "note": "Call"},
        "task",
    )


async def test_a_sequence_step_plans_the_next_action_unless_a_person_did(api) -> None:
    deal = str((await api.open())["id"])
    now = api.clock()
    await api.consume(created(deal, "Call", now + timedelta(days=1)))
    await api.consume(step(deal, now, 3, "Chase the PO"), sequence=10)
    assert await shown(api, deal) == ({"date": day(now, 3), "note": "Chase the PO"}, "sequence")

    await api.consume(step(deal, now, 2, "An older step"), sequence=9)  # read late
    assert await shown(api, deal) == ({"date": day(now, 3), "note": "Chase the PO"}, "sequence")

    mine = {"date": day(now, 6), "note": "Lunch with the buyer"}
    assert (
        await api.call("PATCH", f"/opportunities/{deal}", {"next_action": mine})
    ).status_code == 200
    await api.consume(step(deal, now, 4, "Chase again"), sequence=11)
    assert await shown(api, deal) == (mine, "hand")


async def test_a_closed_deal_gets_none_and_a_purged_one_is_left_alone(api) -> None:
    deal = str((await api.open())["id"])
    now = api.clock()
    await api.consume(created(deal, "Call", now + timedelta(days=1)))
    lost = {"stage": "closed_lost", "lost_reason": "no budget"}
    assert (await api.call("POST", f"/opportunities/{deal}/stage", lost)).status_code == 200
    assert await shown(api, deal) == (None, None)
    await api.consume(created(deal, "Another call", now + timedelta(days=2)))
    assert await shown(api, deal) == (None, None)

    await api.consume(
        OpportunityPurgeRequested(
            opportunity_id=uuid.UUID(deal),
            run_id=uuid.uuid4(),
            policy=PurgePolicySnapshot(version=1, retention_days_won=30, retention_days_lost=30),
            quotes_purged=0,
            requested_at=now,
        )
    )
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 404
    async with api.engine.connect() as connection:
        left = await connection.scalar(
            select(func.count())
            .select_from(deal_tasks)
            .where(deal_tasks.c.opportunity_id == uuid.UUID(deal))
        )
    assert left == 0  # the copy of its tasks went with the deal
    before = await api.events_of(deal)
    await api.consume(created(deal, "Too late", now + timedelta(days=3)))
    await api.consume(step(deal, now, 1, "Too late"))
    assert await api.events_of(deal) == before


# PostgreSQL only: there a change reads the deal unlocked (`one_write`), so a consumer can
# write between its read and its save; SQLite's one writer never lets the two interleave.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_change_saved_after_a_step_was_recorded_keeps_that_record(api) -> None:
    """A step that plans the next action already planned changes only the record of the
    steps applied, with no new version. A stage move that read the deal before that
    record was written and saves after it must not write the older record back: a late
    copy of the step would then plan its next action again."""
    deal = str((await api.open())["id"])
    now = api.clock()
    await api.consume(step(deal, now, 3, "Chase the PO"), sequence=10)
    async with api.engine.connect() as holder:
        await holder.begin()
        await holder.execute(text("LOCK TABLE sales_history IN SHARE MODE"))
        moved = asyncio.ensure_future(
            api.call("POST", f"/opportunities/{deal}/stage", {"stage": "qualification"})
        )
        await until_waiting(holder, "sales_history", 1)  # it has read the deal
        await api.consume(step(deal, now, 3, "Chase the PO"), sequence=11)
        await holder.rollback()
    assert (await moved).status_code == 200

    await api.consume(step(deal, now, 5, "A copy of step 11"), sequence=11)
    assert await shown(api, deal) == ({"date": day(now, 3), "note": "Chase the PO"}, "sequence")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_next_action_set_by_hand_after_a_step_was_recorded_keeps_that_record(
    api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that writes the bookkeeping itself (a person's next action) and read it
    unlocked runs again locked, so it writes over what a consumer recorded meanwhile,
    not over what it first read. Step 11 is applied while the change holds its first
    read, as a consumer's batch would be."""
    deal = str((await api.open())["id"])
    now = api.clock()
    await api.consume(step(deal, now, 3, "Chase the PO"), sequence=10)
    meanwhile = [step(deal, now, 3, "Chase the PO")]
    # What a change starts from: a read, or the copy of the deal this process wrote last.
    read = OpportunityRepository.get_to_change

    async def read_then_step(self: OpportunityRepository, opportunity_id: uuid.UUID) -> Any:
        deal_read = await read(self, opportunity_id)
        if meanwhile:
            await api.consume(meanwhile.pop(), sequence=11)
        return deal_read

    monkeypatch.setattr(OpportunityRepository, "get_to_change", read_then_step)
    mine = {"date": day(now, 6), "note": "Lunch with the buyer"}
    response = await api.call("PATCH", f"/opportunities/{deal}", {"next_action": mine})
    monkeypatch.undo()
    assert response.status_code == 200, response.text

    assert await shown(api, deal) == (mine, "hand")
    async with api.engine.connect() as connection:
        applied = await connection.scalar(
            select(opportunities.c.next_action_applied).where(opportunities.c.id == uuid.UUID(deal))
        )
    assert applied["fields"] == {"next_action": 11}
