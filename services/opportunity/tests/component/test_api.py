"""The opportunity API end to end on PostgreSQL: each endpoint, each refusal.

`api` is the fixture of conftest.py: the real app on a migrated schema of its own.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import jwt
import pytest

PROBLEM = "application/problem+json"
ACME = {"kind": "organization", "id": "acme", "name": "ACME Corp"}
USD = {"amount": "50000.00", "currency": "USD"}


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
        assert field in body["detail"]
    return body


# --- the happy paths ---------------------------------------------------------------


async def test_the_minimum_create_request_opens_a_lead(api) -> None:
    response = await api.call(
        "POST", "/opportunities", {"title": "Fleet renewal", "customer": ACME, "value": USD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["stage"] == "lead"
    assert body["probability"] == 10
    assert body["version"] == 1
    assert uuid.UUID(body["id"])
    assert body["value"] == USD
    assert body["owners"] == ["alice"]
    assert response.headers["location"] == f"/opportunities/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert await api.events_of(body["id"]) == [("opportunity.created", 1)]


async def test_opening_a_deal_writes_once(api) -> None:
    statements = "dealflow_db_statements_total"
    await api.open()  # the custom field definitions are read (and on PostgreSQL kept)
    before = api.platform.registry.get_sample_value(statements) or 0
    word = f"hangar{uuid.uuid4().hex[:8]}"
    deal = await api.open(title=f"Zeppelin {word}")
    sent = (api.platform.registry.get_sample_value(statements) or 0) - before
    if api.engine.dialect.name == "postgresql":
        # The deal, its owner, its first history entry, its search document and its
        # event, checked against the definitions kept (`test_recent_copies`).
        assert sent == 1
    else:
        assert sent > 2  # SQLite reads the definitions and has no writing CTE
    history = (await api.call("GET", f"/opportunities/{deal['id']}/history")).json()
    assert [(h["from_stage"], h["to_stage"], h["owners"]) for h in history] == [
        (None, "lead", ["alice"])
    ]
    found = (await api.call("GET", f"/opportunities?q={word}")).json()["items"]
    assert [d["id"] for d in found] == [deal["id"]]


async def test_a_full_create_request_keeps_every_field(api) -> None:
    close = (date.today() + timedelta(days=30)).isoformat()
    body = await api.open(
        description="Replace 40 vans",
        contact={"name": "Carla Buyer", "email": "carla@acme.test", "phone": "+1 555 0100"},
        contact_address={"lines": ["1 Main St"], "city": "Springfield", "country": "US"},
        probability=15,
        expected_close_date=close,
        next_action={"date": close, "note": "send pricing"},
        lead_origin="trade_show",
        external_reference="CRM-991",
        team_id="emea",
    )
    fetched = (await api.call("GET", f"/opportunities/{body['id']}")).json()
    assert fetched["contact"]["name"] == "Carla Buyer"
    assert fetched["contact_address"]["city"] == "Springfield"
    assert fetched["probability"] == 15
    assert fetched["expected_close_date"] == close
    assert fetched["next_action"] == {"date": close, "note": "send pricing"}
    assert fetched["lead_origin"] == "trade_show"
    assert fetched["external_reference"] == "CRM-991"
    assert fetched["team_id"] == "emea"


async def test_a_deal_moves_through_the_stages_and_its_history_is_kept(api) -> None:
    deal = await api.open()
    path = f"/opportunities/{deal['id']}"
    for stage, probability, days in [
        ("qualification", 30, 1),
        ("proposal", 50, 2),
        ("negotiation", 70, 0.5),
        ("closed_won", 100, 3),
    ]:
        api.clock.advance(days=days)
        response = await api.call("POST", f"{path}/stage", {"stage": stage})
        assert response.status_code == 200, response.text
        assert (response.json()["stage"], response.json()["probability"]) == (stage, probability)

    history = (await api.call("GET", f"{path}/history")).json()
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [
        (None, "lead"),
        ("lead", "qualification"),
        ("qualification", "proposal"),
        ("proposal", "negotiation"),
        ("negotiation", "closed_won"),
    ]
    assert [h["days_in_previous_stage"] for h in history[1:]] == [1.0, 2.0, 0.5, 3.0]
    assert all(h["by"] == "alice" and h["owners"] == ["alice"] for h in history)
    assert all(datetime.fromisoformat(h["at"]).tzinfo is not None for h in history)
    assert [e for e, _ in await api.events_of(deal["id"])] == [
        "opportunity.created",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.won",
    ]
    assert [s for _, s in await api.events_of(deal["id"])] == [1, 2, 3, 4, 5, 6]
    final = (await api.call("GET", path)).json()
    assert final["closed_at"] is not None
    assert final["allowed_moves"] == []


async def test_an_explicit_probability_on_a_move_is_kept(api) -> None:
    deal = await api.open()
    response = await api.call(
        "POST", f"/opportunities/{deal['id']}/stage", {"stage": "qualification", "probability": 42}
    )
    assert response.json()["probability"] == 42


async def test_losing_records_the_reason_and_the_note(api) -> None:
    deal = await api.open()
    path = f"/opportunities/{deal['id']}"
    response = await api.call(
        "POST", f"{path}/lose", {"reason": "budget cut", "note": "Frozen until next year"}
    )
    assert response.status_code == 200
    assert (response.json()["stage"], response.json()["lost_reason"]) == (
        "closed_lost",
        "budget cut",
    )
    notes = (await api.call("GET", f"{path}/notes")).json()
    assert [(n["reason"], n["text"]) for n in notes] == [("lost", "Frozen until next year")]
    assert [e for e, _ in await api.events_of(deal["id"])] == [
        "opportunity.created",
        "opportunity.stage_changed",
        "opportunity.note_added",
        "opportunity.lost",
    ]


async def test_a_lost_move_through_the_stage_endpoint_takes_a_reason(api) -> None:
    deal = await api.open()
    response = await api.call(
        "POST",
        f"/opportunities/{deal['id']}/stage",
        {"stage": "closed_lost", "lost_reason": "no budget"},
    )
    assert response.json()["stage"] == "closed_lost"


async def test_an_update_with_the_current_version_changes_only_what_was_sent(api) -> None:
    deal = await api.open(description="first")
    response = await api.call(
        "PATCH",
        f"/opportunities/{deal['id']}",
        {
            "title": "Fleet renewal 2027",
            "value": {"amount": "61000.5", "currency": "EUR"},
            "description": None,
        },
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["value"], body["description"], body["version"]) == (
        "Fleet renewal 2027",
        {"amount": "61000.50", "currency": "EUR"},
        None,
        2,
    )
    assert response.headers["etag"] == '"2"'
    assert body["customer"] == ACME


async def test_notes_are_added_with_a_reason(api) -> None:
    deal = await api.open()
    response = await api.call(
        "POST", f"/opportunities/{deal['id']}/notes", {"reason": "call", "text": "Spoke to Carla"}
    )
    assert response.status_code == 201
    assert response.json()["reason"] == "call"
    listed = (await api.call("GET", f"/opportunities/{deal['id']}/notes")).json()
    assert [n["text"] for n in listed] == ["Spoke to Carla"]


async def test_owners_teams_and_claims(api) -> None:
    manager = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
    deal = await api.open(team_id="emea")
    path = f"/opportunities/{deal['id']}"

    response = await api.call("POST", f"{path}/owners", {"user_id": "carol"}, **manager)
    assert response.json()["owners"] == ["alice", "carol"]
    response = await api.call("DELETE", f"{path}/owners/alice", **manager)
    assert response.json()["owners"] == ["carol"]
    response = await api.call("PUT", f"{path}/team", {"team_id": "emea"}, **manager)
    assert (response.json()["owners"], response.json()["team_id"]) == ([], "emea")
    response = await api.call("POST", f"{path}/claim", user="dave", teams=("emea",))
    assert response.json()["owners"] == ["dave"]

    assignments = (await api.call("GET", f"{path}/assignments", **manager)).json()
    assert [(a["action"], a["user_id"], a["owners"]) for a in assignments] == [
        ("assigned", "carol", ["alice", "carol"]),
        ("unassigned", "alice", ["carol"]),
        ("team_assigned", None, []),
        ("claimed", "dave", ["dave"]),
    ]
    api.clock.advance(hours=1)
    await api.call("POST", f"{path}/stage", {"stage": "qualification"}, user="dave")
    history = (await api.call("GET", f"{path}/history", user="dave")).json()
    assert history[-1]["owners"] == ["dave"]


async def test_listing_filters_and_pages(api) -> None:
    marker = uuid.uuid4().hex[:8]
    customer = {"kind": "organization", "id": f"cust-{marker}", "name": f"Zeta {marker}"}
    close = date.today() + timedelta(days=10)
    made = []
    for i in range(5):
        api.clock.advance(seconds=1)
        made.append(
            await api.open(
                title=f"Deal {i} {marker}",
                customer=customer,
                expected_close_date=(close + timedelta(days=i)).isoformat(),
            )
        )
    await api.call("POST", f"/opportunities/{made[0]['id']}/stage", {"stage": "qualification"})

    async def ids(query: str) -> list[str]:
        response = await api.call("GET", f"/opportunities?customer=cust-{marker}&{query}")
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    newest_first = [m["id"] for m in reversed(made)]
    assert await ids("") == newest_first
    assert await ids("stage=qualification") == [made[0]["id"]]
    assert await ids("stage=lead&stage=qualification") == newest_first
    assert await ids(f"q=deal 3 {marker}") == [made[3]["id"]]
    assert await ids(f"q=ZETA {marker}") == newest_first
    assert await ids("owner=alice") == newest_first
    assert await ids("owner=nobody") == []
    window = (
        f"expected_close_from={close + timedelta(days=1)}"
        f"&expected_close_to={close + timedelta(days=2)}"
    )
    assert await ids(window) == [made[2]["id"], made[1]["id"]]

    seen: list[str] = []
    cursor = ""
    while True:
        page = (
            await api.call("GET", f"/opportunities?customer=cust-{marker}&limit=2{cursor}")
        ).json()
        seen += [o["id"] for o in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == newest_first


async def test_a_rep_sees_only_what_is_theirs_or_their_teams(api) -> None:
    deal = await api.open(user="alice", teams=("emea",))
    assert (
        await api.call("GET", f"/opportunities/{deal['id']}", user="zoe", teams=("apac",))
    ).status_code == 404
    assert (
        await api.call(
            "GET", f"/opportunities/{deal['id']}", user="ops", roles=("operator",), teams=()
        )
    ).status_code == 200
    listed = (
        await api.call("GET", "/opportunities?limit=200", user="zoe", teams=("apac",))
    ).json()["items"]
    assert deal["id"] not in [o["id"] for o in listed]


async def test_the_stage_machine_is_published(api) -> None:
    body = (await api.call("GET", "/stages")).json()
    assert body["default_probability"]["negotiation"] == 70
    assert {"from": "negotiation", "to": "closed_won", "trigger": "move"} in body["transitions"]
    assert body["mermaid"].startswith("stateDiagram-v2")


async def test_operational_endpoints_need_no_token(api) -> None:
    assert (await api.http.get("/healthz")).json()["status"] == "ok"
    metrics = await api.http.get("/metrics")
    assert "dealflow_http_requests_total" in metrics.text
    ready = await api.http.get("/readyz")
    # No broker in these tests: not ready, and it says which part is missing.
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": False, "consumers": False}
    spec = (await api.http.get("/asyncapi.json")).json()
    assert "dealflow-opportunity-events" in spec["channels"]
    assert (await api.http.get("/openapi.json")).status_code == 200


# --- refusals: status, problem+json naming the problem, and nothing written --------


BAD_CREATES = [
    ("malformed JSON", b'{"title": "x",', "body"),
    ("unknown field", {"title": "x", "customer": ACME, "value": USD, "colour": "red"}, "colour"),
    (
        "negative amount",
        {"title": "x", "customer": ACME, "value": {"amount": "-1.00", "currency": "USD"}},
        "value.amount",
    ),
    (
        "non-numeric amount",
        {"title": "x", "customer": ACME, "value": {"amount": "lots", "currency": "USD"}},
        "value.amount",
    ),
    (
        "float amount",
        {"title": "x", "customer": ACME, "value": {"amount": 10.5, "currency": "USD"}},
        "value.amount",
    ),
    (
        "unknown currency",
        {"title": "x", "customer": ACME, "value": {"amount": "1.00", "currency": "ABC"}},
        "value.currency",
    ),
    (
        "too many decimals",
        {"title": "x", "customer": ACME, "value": {"amount": "1.5", "currency": "JPY"}},
        "value",
    ),
    (
        "probability above 100",
        {"title": "x", "customer": ACME, "value": USD, "probability": 101},
        "probability",
    ),
    (
        "probability below 0",
        {"title": "x", "customer": ACME, "value": USD, "probability": -1},
        "probability",
    ),
    (
        "probability as text",
        {"title": "x", "customer": ACME, "value": USD, "probability": "50"},
        "probability",
    ),
    (
        "customer of both kinds",
        {
            "title": "x",
            "value": USD,
            "customer": {"kind": ["organization", "individual"], "id": "c", "name": "n"},
        },
        "customer.kind",
    ),
    (
        "customer with fields of both kinds",
        {"title": "x", "value": USD, "customer": {**ACME, "first_name": "Bob"}},
        "customer.first_name",
    ),
    (
        "an individual with a separate contact",
        {
            "title": "x",
            "value": USD,
            "customer": {"kind": "individual", "id": "p", "name": "Bob"},
            "contact": {"name": "Someone"},
        },
        "contact",
    ),
    (
        "expected close date in the past",
        {"title": "x", "customer": ACME, "value": USD, "expected_close_date": "2020-01-01"},
        "expected_close_date",
    ),
    ("empty title", {"title": "  ", "customer": ACME, "value": USD}, "title"),
    ("missing value", {"title": "x", "customer": ACME}, "value"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
async def test_bad_create_input_is_refused_and_writes_nothing(api, case, body, field) -> None:
    before = await api.written()
    if isinstance(body, bytes):
        response = await api.http.post(
            "/opportunities",
            content=body,
            headers={**api.headers("alice", ("rep",), ()), "content-type": "application/json"},
        )
    else:
        response = await api.call("POST", "/opportunities", body)
    assert_problem(response, 422, field)
    assert await api.written() == before


async def test_a_forbidden_move_is_409_with_the_allowed_moves(api) -> None:
    deal = await api.open()
    before = await api.written()
    response = await api.call(
        "POST", f"/opportunities/{deal['id']}/stage", {"stage": "negotiation"}
    )
    body = assert_problem(response, 409)
    assert body["allowed"] == ["qualification", "closed_lost"]
    assert body["state"] == "lead"
    assert await api.written() == before


async def test_moving_a_closed_deal_is_409_with_nothing_allowed(api) -> None:
    deal = await api.open()
    await api.call("POST", f"/opportunities/{deal['id']}/lose", {"reason": "no"})
    response = await api.call("POST", f"/opportunities/{deal['id']}/stage", {"stage": "lead"})
    assert assert_problem(response, 409)["allowed"] == []


async def test_losing_without_a_reason_is_refused_and_writes_nothing(api) -> None:
    deal = await api.open()
    before = await api.written()
    assert_problem(await api.call("POST", f"/opportunities/{deal['id']}/lose", {}), 422, "reason")
    assert_problem(
        await api.call("POST", f"/opportunities/{deal['id']}/lose", {"reason": "   "}),
        422,
        "reason",
    )
    assert_problem(
        await api.call("POST", f"/opportunities/{deal['id']}/stage", {"stage": "closed_lost"}),
        422,
        "lost_reason",
    )
    assert await api.written() == before


async def test_a_stale_version_is_412_and_writes_nothing(api) -> None:
    deal = await api.open()
    await api.call("POST", f"/opportunities/{deal['id']}/stage", {"stage": "qualification"})
    before = await api.written()
    response = await api.call(
        "PATCH",
        f"/opportunities/{deal['id']}",
        {"title": "late edit"},
        headers={"If-Match": '"1"'},
    )
    assert assert_problem(response, 412)["current_version"] == 2
    response = await api.call(
        "POST",
        f"/opportunities/{deal['id']}/stage",
        {"stage": "proposal"},
        headers={"If-Match": '"1"'},
    )
    assert_problem(response, 412)
    assert await api.written() == before


async def test_an_update_with_nothing_or_null_required_fields_is_refused(api) -> None:
    deal = await api.open()
    before = await api.written()
    assert_problem(await api.call("PATCH", f"/opportunities/{deal['id']}", {}), 422)
    assert_problem(
        await api.call("PATCH", f"/opportunities/{deal['id']}", {"title": None}), 422, "title"
    )
    assert await api.written() == before


async def test_unknown_ids_are_404(api) -> None:
    missing = uuid.uuid4()
    assert_problem(await api.call("GET", f"/opportunities/{missing}"), 404)
    assert_problem(
        await api.call("POST", f"/opportunities/{missing}/stage", {"stage": "qualification"}), 404
    )
    assert_problem(await api.call("GET", "/opportunities/not-a-uuid"), 422, "opportunity_id")


async def test_a_bad_cursor_is_refused(api) -> None:
    assert_problem(await api.call("GET", "/opportunities?cursor=garbage"), 422, "cursor")


def _forged(secret: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "roles": ["rep"], "teams": [], "aud": "dealflow", "exp": now + 60}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("case", "authorization"),
    [
        ("no token", None),
        ("not a bearer token", "Basic YWxpY2U6c2VjcmV0"),
        ("garbage", "Bearer not.a.jwt"),
        ("wrong secret", "Bearer " + _forged("another-secret-of-at-least-32-chars!!")),
    ],
)
async def test_a_missing_or_invalid_token_is_401_and_writes_nothing(
    api, case, authorization
) -> None:
    before = await api.written()
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.http.post(
        "/opportunities", json={"title": "x", "customer": ACME, "value": USD}, headers=headers
    )
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await api.written() == before


async def test_expired_and_foreign_audience_tokens_are_401(api, jwt_secret) -> None:
    for token in (
        _forged(jwt_secret, exp=int(time.time()) - 10),
        _forged(jwt_secret, aud="someone-else"),
        jwt.encode({"sub": "alice", "aud": "dealflow"}, jwt_secret, algorithm="HS256"),
    ):
        response = await api.http.get(
            "/opportunities", headers={"Authorization": f"Bearer {token}"}
        )
        assert_problem(response, 401)


async def test_operators_cannot_change_deals(api) -> None:
    deal = await api.open()
    before = await api.written()
    response = await api.call(
        "POST",
        f"/opportunities/{deal['id']}/stage",
        {"stage": "qualification"},
        user="ops",
        roles=("operator",),
        teams=(),
    )
    assert_problem(response, 403)
    assert await api.written() == before


async def test_concurrent_moves_of_one_deal_apply_one_after_the_other(api) -> None:
    import asyncio

    deal = await api.open()
    path = f"/opportunities/{deal['id']}/stage"
    first, second = await asyncio.gather(
        api.call("POST", path, {"stage": "qualification"}, headers={"If-Match": '"1"'}),
        api.call("POST", path, {"stage": "qualification"}, headers={"If-Match": '"1"'}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412]
    assert [s for _, s in await api.events_of(deal["id"])] == [1, 2]


async def test_a_rep_files_deals_only_into_their_own_teams_queue(api) -> None:
    before = await api.written()
    response = await api.call(
        "POST",
        "/opportunities",
        {"title": "x", "customer": ACME, "value": USD, "owners": [], "team_id": "apac"},
        teams=("emea",),
    )
    assert_problem(response, 403)
    assert await api.written() == before
    queued = await api.open(owners=[], team_id="emea")
    assert (queued["owners"], queued["team_id"]) == ([], "emea")


async def test_system_note_reasons_are_not_for_people(api) -> None:
    deal = await api.open()
    for reason in ("won", "lost", "stage_change"):
        response = await api.call(
            "POST", f"/opportunities/{deal['id']}/notes", {"reason": reason, "text": "x"}
        )
        assert_problem(response, 422, "reason")
