"""A change starts from the copy of the deal this process wrote last (`recent`), and a copy
out of date never makes an answer a read would not.

Two replicas of the service share one PostgreSQL schema, as a deployment's do: what one
writes, the other's copy does not know. PostgreSQL only: copies serve the one-write
mode's unlocked changes, which SQLite does not have.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.testing import ComponentDatabases, service_under_test
from dealflow_opportunity.bootstrap import MIGRATIONS, OpportunitySettings, build_app

from .conftest import Api
from .test_api import assert_problem
from .test_custom_fields import ADMIN

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
async def replicas(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[tuple[Api, Api]]:
    settings = databases.settings(OpportunitySettings, jwt_secret)
    async with (
        service_under_test(Api, settings, build_app, MIGRATIONS, token, [OPPORTUNITY_EVENTS]) as a,
        service_under_test(Api, settings, build_app, MIGRATIONS, token, [OPPORTUNITY_EVENTS]) as b,
    ):
        yield a, b


def copies(api: Api, outcome: str) -> float:
    value = api.platform.registry.get_sample_value(
        "dealflow_recent_copies_total", {"kind": "opportunity", "outcome": outcome}
    )
    return value or 0.0


async def move(api: Api, deal: str, stage: str, **call: Any) -> Any:
    return await api.call("POST", f"/opportunities/{deal}/stage", {"stage": stage}, **call)


async def history(api: Api, deal: str) -> list[tuple[str | None, str]]:
    response = await api.call("GET", f"/opportunities/{deal}/history")
    assert response.status_code == 200, response.text
    return [(h["from_stage"], h["to_stage"]) for h in response.json()]


async def test_a_change_after_a_change_starts_from_the_copy(replicas: tuple[Api, Api]) -> None:
    a, _ = replicas
    deal = str((await a.open())["id"])
    moved = await move(a, deal, "qualification")
    assert moved.status_code == 200, moved.text
    assert (copies(a, "served"), copies(a, "refused")) == (1, 0)
    # What the copy answered is what a read finds.
    read = await a.call("GET", f"/opportunities/{deal}")
    assert read.json() == moved.json()
    assert read.headers["ETag"] == moved.headers["ETag"] == '"2"'


async def test_a_copy_another_replica_made_old_is_refused_and_the_change_reads(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    deal = str((await a.open())["id"])
    assert (await move(b, deal, "qualification")).status_code == 200
    moved = await move(a, deal, "proposal")  # a's copy is still at `lead`, version 1
    assert moved.status_code == 200, moved.text
    assert (moved.json()["stage"], moved.headers["ETag"]) == ("proposal", '"3"')
    assert copies(a, "refused") == 1
    assert await history(a, deal) == [
        (None, "lead"),
        ("lead", "qualification"),
        ("qualification", "proposal"),
    ]
    # The refused copy is forgotten; the change's own result is the next one.
    assert (await move(a, deal, "negotiation")).status_code == 200
    assert (copies(a, "served"), copies(a, "refused")) == (2, 1)


async def test_if_match_is_compared_with_the_row_not_with_an_old_copy(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    deal = str((await a.open())["id"])
    assert (await move(b, deal, "qualification")).status_code == 200
    current = (await b.call("GET", f"/opportunities/{deal}")).headers["ETag"]
    assert current == '"2"'
    old = await move(a, deal, "proposal", headers={"If-Match": '"1"'})
    assert old.status_code == 412, old.text
    moved = await move(a, deal, "proposal", headers={"If-Match": current})
    assert moved.status_code == 200, moved.text
    assert moved.headers["ETag"] == '"3"'


async def test_someone_taken_off_the_deal_by_another_replica_is_refused(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    manager = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
    bob = {"user": "bob", "teams": ("apac",)}  # sees the deal only as its owner
    deal = str((await a.open())["id"])
    added = await a.call("POST", f"/opportunities/{deal}/owners", {"user_id": "bob"}, **manager)
    assert added.status_code == 200, added.text  # a keeps the copy with bob an owner
    removed = await b.call("DELETE", f"/opportunities/{deal}/owners/bob", **manager)
    assert removed.json()["owners"] == ["alice"]
    refused = await move(a, deal, "qualification", **bob)
    assert refused.status_code == 404, refused.text
    assert (await a.call("GET", f"/opportunities/{deal}")).json()["stage"] == "lead"


async def test_a_refusal_decided_on_an_old_copy_is_decided_again_on_a_read(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    deal = str((await a.open())["id"])
    assert (await move(b, deal, "qualification")).status_code == 200
    # From `lead` (a's copy) a deal cannot go to `proposal`; from `qualification` it can.
    moved = await move(a, deal, "proposal")
    assert moved.status_code == 200, moved.text
    # A refusal the row itself gives stands.
    refused = await move(a, deal, "closed_won")
    assert refused.status_code == 409, refused.text


async def test_a_next_action_source_changed_without_a_new_version_refuses_the_copy(
    replicas: tuple[Api, Api],
) -> None:
    """Automation may change where the next action came from without a new version
    (`next_action_source` is bookkeeping); the answer shows it, so a copy that holds
    another source is refused by the write."""
    a, _ = replicas
    action = {"date": "2031-01-15", "note": "Call the buyer"}
    deal = str((await a.open(next_action=action))["id"])
    async with a.engine.begin() as connection:  # as a replica's consumer would write it
        await connection.execute(
            text("UPDATE opportunities SET next_action_source = 'task' WHERE id = :id"),
            {"id": uuid.UUID(deal)},
        )
    moved = await move(a, deal, "qualification")
    assert moved.status_code == 200, moved.text
    assert moved.json()["next_action_source"] == "task"
    assert copies(a, "refused") == 1


async def test_a_change_that_writes_nothing_answers_from_a_read(
    replicas: tuple[Api, Api],
) -> None:
    """No versioned write checks the copy such a change is made of: it reads."""
    a, b = replicas
    deal = str((await a.open())["id"])
    assert (await move(b, deal, "qualification")).status_code == 200
    same = await a.call("PATCH", f"/opportunities/{deal}", {"title": "Fleet renewal"})
    assert same.status_code == 200, same.text
    assert (same.json()["stage"], same.headers["ETag"]) == ("qualification", '"2"')


async def test_definitions_another_replica_changed_refuse_the_kept_copy(
    replicas: tuple[Api, Api],
) -> None:
    """A field another replica made required is asked for at once, and a field it added
    is accepted at once: the insert finds the table changed, and the deal is checked
    again against a read."""
    a, b = replicas
    await a.open()  # a keeps the definitions as they are now
    region = f"region_{uuid.uuid4().hex[:8]}"
    body = {"key": region, "label": "Region", "type": "text", "required": True}
    defined = await b.call("POST", "/custom-fields", body, **ADMIN)
    assert defined.status_code == 201, defined.text
    try:
        before = await a.written()
        refused = await a.opening(title="No region")
        assert_problem(refused, 422, f"custom_fields.{region}")
        assert await a.written() == before
        deal = await a.open(custom_fields={region: "north"})
        assert deal["custom_fields"] == {region: "north"}
    finally:
        retired = await b.call("PATCH", f"/custom-fields/{region}", {"retired": True}, **ADMIN)
        assert retired.status_code == 200, retired.text
    # Retired by b: a's copy, which a made the required field from, is refused again.
    assert (await a.open())["custom_fields"] == {}
