"""A deal entering proposal gets its follow-up: the opportunity service's stage change
reaches the sequence service over Kafka, enrolls the deal, and the first step's task
appears on the deal, for its owner, and on dealflow.sequence.events; back over Kafka,
its due date becomes the deal's next action on the opportunity service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dealflow_common.contracts.topics import SEQUENCE_EVENTS
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


async def until(
    check: Callable[[], Awaitable[list[dict[str, Any]]]], timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing after {timeout:.0f}s")
        await asyncio.sleep(0.3)


async def test_a_stage_change_into_proposal_enrolls_and_the_first_task_appears(
    stack, as_user
) -> None:
    async with as_user("sequence", "mia", roles=("manager",)) as sequences:
        defined = await sequences.post(
            "/sequences",
            json={
                "name": "Proposal follow-up",
                "trigger": {"event": "opportunity.stage_changed", "stage": "proposal"},
                "steps": [{"after": "PT1S", "action": "task", "title": "Call about the offer"}],
            },
        )
        assert defined.status_code == 201, defined.text
    try:
        async with as_user("opportunity", "alice", roles=("rep",)) as opportunities:
            created = await opportunities.post("/opportunities", json=DEAL)
            assert created.status_code == 201, created.text
            deal = created.json()["id"]
            for stage in ("qualification", "proposal"):
                moved = await opportunities.post(
                    f"/opportunities/{deal}/stage", json={"stage": stage}
                )
                assert moved.status_code == 200, moved.text

        async with as_user("sequence", "alice", roles=("rep",)) as sequences:

            async def tasks() -> list[dict[str, Any]]:
                response = await sequences.get(f"/tasks?opportunity_id={deal}")
                return list(response.json()) if response.status_code == 200 else []

            (task,) = await until(tasks)
            assert (task["title"], task["assignee"], task["state"]) == (
                "Call about the offer",
                "alice",
                "open",
            )
            history = (await sequences.get(f"/opportunities/{deal}/enrollments")).json()
            mine = [e for e in history if e["sequence_id"] == defined.json()["id"]]
            assert [e["state"] for e in mine] == ["completed"]

        async with as_user("opportunity", "alice", roles=("rep",)) as opportunities:

            async def next_action() -> list[dict[str, Any]]:
                body = (await opportunities.get(f"/opportunities/{deal}")).json()
                return [body] if body["next_action_source"] == "task" else []

            (shown,) = await until(next_action)
            assert shown["next_action"] == {
                "date": task["due_at"][:10],
                "note": "Call about the offer",
            }

        async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:
            await reader.wait_for(
                lambda _: "task.created" in [r.event["type"] for r in reader.of(deal)]
            )
        kinds = [r.event["type"] for r in reader.of(deal)]
        assert kinds.index("sequence.enrolled") < kinds.index("task.created")
    finally:
        async with as_user("sequence", "mia", roles=("manager",)) as sequences:
            await sequences.post(f"/sequences/{defined.json()['id']}/retire")
