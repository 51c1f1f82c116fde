"""The operators' API: who may call it, bad input that writes nothing, dry runs."""

from __future__ import annotations

import uuid

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_purge.adapters.tables import deal_purges

from .conftest import OPERATOR

ENDPOINTS = [
    ("GET", "/purge/status", None),
    ("GET", "/purge/runs", None),
    ("GET", f"/purge/runs/{uuid.uuid4()}", None),
    ("GET", f"/purge/runs/{uuid.uuid4()}/items", None),
    ("POST", "/purge/runs", {"dry_run": True}),
    ("POST", "/purge/pause", None),
    ("POST", "/purge/resume", None),
    ("GET", "/purge/policy", None),
    ("PUT", "/purge/policy", {}),
    ("POST", "/purge/holds", {}),
    ("DELETE", f"/purge/holds/{uuid.uuid4()}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_only_operators_and_admins_may_call_the_agent(agent, method, path, body) -> None:
    before = await agent.written()
    for roles in [("rep",), ("manager",), ("rep", "manager")]:
        assert (await agent.call(method, path, body, roles=roles)).status_code == 403
    unauthenticated = await agent.http.request(method, path, json=body)
    assert unauthenticated.status_code == 401
    assert await agent.written() == before


async def test_admins_read_the_status_like_operators(agent) -> None:
    response = await agent.call("GET", "/purge/status", user="ada", roles=("admin",))
    assert response.status_code == 200
    assert response.json()["paused"] is False


GOOD_POLICY = {
    "retention_days_won": 60,
    "retention_days_lost": 15,
    "batch_size": 50,
    "schedule": "*/30 * * * *",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retention_days_won": -1}, "retention_days_won"),
        ({"retention_days_lost": -30}, "retention_days_lost"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1001}, "batch_size"),
        ({"schedule": "every hour"}, "schedule"),
        ({"schedule": "0 25 * * *"}, "schedule"),
        ({"retention_days_won": "thirty"}, "retention_days_won"),
        ({"journal": "maybe"}, "journal"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_policy_names_the_field_and_changes_nothing(agent, change, field) -> None:
    before = await agent.written()
    policy_before = (await agent.call("GET", "/purge/policy", **OPERATOR)).json()
    response = await agent.call("PUT", "/purge/policy", {**GOOD_POLICY, **change}, **OPERATOR)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await agent.written() == before
    assert (await agent.call("GET", "/purge/policy", **OPERATOR)).json() == policy_before


async def test_a_good_policy_is_stored_with_a_new_version(agent) -> None:
    before = (await agent.call("GET", "/purge/policy", **OPERATOR)).json()
    assert {k: before[k] for k in ("retention_days_won", "batch_size", "schedule")} == {
        "retention_days_won": 30,
        "batch_size": 100,
        "schedule": "0 * * * *",
    }
    changed = await agent.call("PUT", "/purge/policy", {**GOOD_POLICY}, **OPERATOR)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**GOOD_POLICY, "journal": False, "version": before["version"] + 1}
    journal = await agent.call("PUT", "/purge/policy", {**GOOD_POLICY, "journal": True}, **OPERATOR)
    assert journal.json() == {**GOOD_POLICY, "journal": True, "version": before["version"] + 2}
    assert (await agent.call("GET", "/purge/policy", **OPERATOR)).json() == journal.json()
    restored = {k: before[k] for k in (*GOOD_POLICY, "journal")}
    assert (await agent.call("PUT", "/purge/policy", restored, **OPERATOR)).status_code == 200


async def test_a_hold_on_an_unknown_deal_is_refused_and_writes_nothing(agent) -> None:
    before = await agent.written()
    unknown = {"opportunity_id": str(uuid.uuid4()), "reason": "litigation"}
    response = await agent.call("POST", "/purge/holds", unknown, **OPERATOR)
    assert response.status_code == 404
    assert (await agent.call("POST", "/purge/holds", {"reason": "x"}, **OPERATOR)).json()["errors"][
        0
    ]["field"] == "opportunity_id"
    released = await agent.call("DELETE", f"/purge/holds/{uuid.uuid4()}", **OPERATOR)
    assert released.status_code == 404
    assert await agent.written() == before


async def test_holds_are_placed_and_released(agent) -> None:
    deal, _ = await agent.deal(Stage.NEGOTIATION, closed_days_ago=None)
    body = {"opportunity_id": str(deal), "reason": "litigation"}
    placed = await agent.call("POST", "/purge/holds", body, **OPERATOR)
    assert placed.status_code == 201, placed.text
    assert placed.json()["placed_by"] == "olga"
    assert (await agent.call("DELETE", f"/purge/holds/{deal}", **OPERATOR)).status_code == 204
    assert (await agent.call("DELETE", f"/purge/holds/{deal}", **OPERATOR)).status_code == 404


async def test_resume_when_not_paused_is_a_conflict_and_pause_resume_round_trips(agent) -> None:
    before = await agent.written()
    refused = await agent.call("POST", "/purge/resume", **OPERATOR)
    assert refused.status_code == 409
    assert await agent.written() == before
    assert (await agent.call("POST", "/purge/pause", **OPERATOR)).status_code == 204
    assert (await agent.call("GET", "/purge/status", **OPERATOR)).json()["paused"] is True
    real_run = await agent.call("POST", "/purge/runs", {"dry_run": False}, **OPERATOR)
    assert real_run.status_code == 409
    assert (await agent.call("POST", "/purge/resume", **OPERATOR)).status_code == 204
    assert (await agent.call("GET", "/purge/status", **OPERATOR)).json()["paused"] is False


async def test_a_dry_run_lists_what_would_go_and_changes_nothing(agent) -> None:
    won, _ = await agent.deal(Stage.CLOSED_WON, 40, quotes=2)
    lost, _ = await agent.deal(Stage.CLOSED_LOST, 31)
    recent, _ = await agent.deal(Stage.CLOSED_WON, 5)
    open_deal, _ = await agent.deal(Stage.PROPOSAL, None)
    held, _ = await agent.deal(Stage.CLOSED_LOST, 90)
    hold = {"opportunity_id": str(held), "reason": "audit"}
    assert (await agent.call("POST", "/purge/holds", hold, **OPERATOR)).status_code == 201
    commands_before = await agent.commands()

    started = await agent.call("POST", "/purge/runs", {"dry_run": True}, **OPERATOR)
    assert started.status_code == 202, started.text
    run = await agent.run_until(started.json()["id"], lambda r: r["finished_at"] is not None)
    items = await agent.items(run["id"])

    assert items[str(won)]["outcome"] == "would_purge"
    assert items[str(lost)]["outcome"] == "would_purge"
    assert items[str(held)] | {"updated_at": None} == {
        "opportunity_id": str(held),
        "outcome": "skipped",
        "reason": "on_hold",
        "quotes_purged": 0,
        "updated_at": None,
    }
    assert str(recent) not in items
    assert str(open_deal) not in items
    assert (run["status"], run["dry_run"], run["purged"]) == ("succeeded", True, 0)
    assert run["would_purge"] >= 2
    assert run["skipped"] >= 1
    assert await agent.commands() == commands_before
    assert (await agent.row_counts(deal_purges))["deal_purges"] == 0
    events = [t for t, _ in await agent.events_of(run["id"])]
    assert events == ["purge.run_started", "purge.run_completed"]
    status = (await agent.call("GET", "/purge/status", **OPERATOR)).json()
    assert status["backlog"] >= 2
    assert status["last_run"]["id"] == run["id"]


async def test_the_policy_schema_states_the_ranges_the_domain_enforces(agent) -> None:
    document = (await agent.http.get("/openapi.json")).json()
    policy = document["components"]["schemas"]["PolicyBody"]["properties"]
    assert (policy["retention_days_won"]["minimum"], policy["batch_size"]["minimum"]) == (0, 1)
    run = document["paths"]["/purge/runs"]["post"]["responses"]
    assert {"200", "202"} <= set(run)  # 200: a run is going, answered with itself
