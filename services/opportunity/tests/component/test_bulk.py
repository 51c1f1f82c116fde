"""Bulk stage changes and assignments on PostgreSQL and SQLite: each deal under its own
rules and in its own transaction, the answer telling per deal what happened, a request
above the maximum refused before anything is written.

This module's service allows at most 3 deals per bulk request, so that the limit is
reached with a few deals.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.testing import ComponentDatabases, service_under_test
from dealflow_opportunity.bootstrap import MIGRATIONS, OpportunitySettings, build_app

from .conftest import Api
from .test_api import assert_problem

MAXIMUM = 3
MANAGER = {"user": "maria", "roles": ("manager",), "teams": ("emea",)}


@pytest.fixture(scope="module")
async def api(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[Api]:
    settings = databases.settings(OpportunitySettings, jwt_secret, bulk_max_size=MAXIMUM)
    async with service_under_test(
        Api, settings, build_app, MIGRATIONS, token, [OPPORTUNITY_EVENTS]
    ) as service:
        yield service


def by_id(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["results"]}


async def test_each_listed_deal_moves_under_its_own_rules(api) -> None:
    lead = await api.open()
    closed = await api.open()
    await api.call("POST", f"/opportunities/{closed['id']}/lose", {"reason": "budget"})
    unknown = str(uuid.uuid4())

    response = await api.call(
        "POST",
        "/opportunities/bulk/stage",
        {"ids": [lead["id"], closed["id"], unknown], "stage": "qualification"},
    )
    results = by_id(response)
    assert [r["id"] for r in response.json()["results"]] == [lead["id"], closed["id"], unknown]
    assert results[lead["id"]]["outcome"] == "changed"
    assert results[lead["id"]]["version"] == 2
    assert results[closed["id"]]["outcome"] == "refused"
    assert results[closed["id"]]["problem"]["status"] == 409
    assert results[closed["id"]]["problem"]["allowed"] == []
    assert results[unknown]["outcome"] == "not_found"
    assert response.json()["changed"] == 1
    assert response.json()["refused"] == 1
    assert response.json()["not_found"] == 1

    moved = (await api.call("GET", f"/opportunities/{lead['id']}")).json()
    assert moved["stage"] == "qualification"
    assert ("opportunity.stage_changed", 2) in await api.events_of(lead["id"])
    assert (await api.call("GET", f"/opportunities/{closed['id']}")).json()["stage"] == (
        "closed_lost"
    )


async def test_a_deal_the_caller_may_not_see_is_answered_as_unknown(api) -> None:
    theirs = await api.open(user="bob", teams=("apac",))
    readable = await api.open(user="bob", teams=("apac",))
    await api.call(
        "POST",
        f"/opportunities/{readable['id']}/shares",
        {"kind": "user", "id": "alice", "grant": "read"},
        user="bob",
        teams=("apac",),
    )
    before = await api.written()
    results = by_id(
        await api.call(
            "POST",
            "/opportunities/bulk/stage",
            {"ids": [theirs["id"], readable["id"]], "stage": "qualification"},
        )
    )
    assert results[theirs["id"]]["outcome"] == "not_found"
    assert results[readable["id"]]["outcome"] == "refused"
    assert results[readable["id"]]["problem"]["status"] == 403
    assert await api.written() == before


async def test_a_filter_selects_the_visible_deals_it_matches(api) -> None:
    customer = {"kind": "organization", "id": f"cust-{uuid.uuid4().hex[:8]}", "name": "Bulk Co"}
    mine = [await api.open(customer=customer) for _ in range(2)]
    await api.open(customer=customer, user="bob", teams=("apac",))  # not visible to alice

    response = await api.call(
        "POST",
        "/opportunities/bulk/stage",
        {"filter": {"customer": customer["id"], "stage": ["lead"]}, "stage": "qualification"},
    )
    results = by_id(response)
    assert set(results) == {d["id"] for d in mine}
    assert {r["outcome"] for r in results.values()} == {"changed"}


async def test_bulk_assignment_adds_an_owner_or_hands_deals_to_a_team(api) -> None:
    first, second = await api.open(), await api.open()
    results = by_id(
        await api.call(
            "POST",
            "/opportunities/bulk/assign",
            {"ids": [first["id"], second["id"]], "user_id": "dave"},
            **MANAGER,
        )
    )
    assert {r["outcome"] for r in results.values()} == {"changed"}
    assert (await api.call("GET", f"/opportunities/{first['id']}")).json()["owners"] == [
        "alice",
        "dave",
    ]
    assert [e for e, _ in await api.events_of(first["id"])][-1] == "opportunity.assigned"
    # Assigned again: allowed, but nothing to change.
    before = await api.written()
    results = by_id(
        await api.call(
            "POST",
            "/opportunities/bulk/assign",
            {"ids": [first["id"]], "user_id": "dave"},
            **MANAGER,
        )
    )
    assert results[first["id"]]["outcome"] == "unchanged"
    assert await api.written() == before

    results = by_id(
        await api.call(
            "POST",
            "/opportunities/bulk/assign",
            {"ids": [first["id"]], "team_id": "apac"},
            **MANAGER,
        )
    )
    assert results[first["id"]]["outcome"] == "changed"
    # A rep may not hand deals to a team: refused per deal, nothing changed.
    before = await api.written()
    results = by_id(
        await api.call(
            "POST", "/opportunities/bulk/assign", {"ids": [second["id"]], "team_id": "apac"}
        )
    )
    assert results[second["id"]]["outcome"] == "refused"
    assert results[second["id"]]["problem"]["status"] == 403
    assert await api.written() == before


async def test_more_listed_deals_than_the_maximum_is_refused_and_writes_nothing(api) -> None:
    deals = [await api.open() for _ in range(MAXIMUM + 1)]
    before = await api.written()
    response = await api.call(
        "POST",
        "/opportunities/bulk/stage",
        {"ids": [d["id"] for d in deals], "stage": "qualification"},
    )
    assert_problem(response, 422, "ids")
    assert await api.written() == before
    # The same deal twice counts once.
    response = await api.call(
        "POST",
        "/opportunities/bulk/stage",
        {"ids": [deals[0]["id"]] * (MAXIMUM + 1), "stage": "qualification"},
    )
    assert by_id(response)[deals[0]["id"]]["outcome"] == "changed"


async def test_a_filter_matching_more_than_the_maximum_is_refused_and_writes_nothing(api) -> None:
    customer = {"kind": "organization", "id": f"cust-{uuid.uuid4().hex[:8]}", "name": "Big Co"}
    for _ in range(MAXIMUM + 1):
        await api.open(customer=customer)
    before = await api.written()
    response = await api.call(
        "POST",
        "/opportunities/bulk/assign",
        {"filter": {"customer": customer["id"]}, "team_id": "apac"},
        **MANAGER,
    )
    assert_problem(response, 422, "filter")
    assert await api.written() == before


BAD_REQUESTS = [
    ("neither-ids-nor-filter", "stage", {"stage": "qualification"}, None),
    ("both-ids-and-filter", "stage", {"ids": [], "filter": {}, "stage": "proposal"}, None),
    ("empty-ids", "stage", {"ids": [], "stage": "qualification"}, "ids"),
    ("not-a-uuid", "stage", {"ids": ["deal-1"], "stage": "qualification"}, "ids[0]"),
    ("unknown-stage", "stage", {"ids": [str(uuid.uuid4())], "stage": "won"}, "stage"),
    (
        "assign-to-nobody",
        "assign",
        {"ids": [str(uuid.uuid4())]},
        None,
    ),
    (
        "unknown-filter",
        "stage",
        {"filter": {"colour": "red"}, "stage": "proposal"},
        "filter.colour",
    ),
    ("empty-search", "stage", {"filter": {"q": "!!"}, "stage": "proposal"}, "filter.q"),
    (
        "unknown-custom-field",
        "stage",
        {"filter": {"custom_fields": {"nope": "1"}}, "stage": "proposal"},
        "filter.custom_fields.nope",
    ),
    (
        "user-and-team",
        "assign",
        {"ids": [str(uuid.uuid4())], "user_id": "dave", "team_id": "apac"},
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "action", "body", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
async def test_a_bad_bulk_request_is_refused_and_writes_nothing(
    api, case, action, body, field
) -> None:
    before = await api.written()
    response = await api.call("POST", f"/opportunities/bulk/{action}", body, **MANAGER)
    assert_problem(response, 422, field)
    assert await api.written() == before
