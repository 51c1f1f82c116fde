"""Mass assignment, probed over the real services: fields a client must never set
(`id`, `version`, `stage`, `owners`, `created_by`, `won_quote_id`, `order_id`, `status`,
`total`) sent in the body of every create and update endpoint are refused with 422
naming the field, or, where the field is the request's own (a deal's `owners` when it
is opened), refused as the caller's roles say; never applied. A refused request leaves
the record as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
REP = (f"massrep-{RUN}", ("rep",), (f"mass-{RUN}",))
MANAGER = (f"massmgr-{RUN}", ("manager",), (f"mass-{RUN}",))
ADMIN = (f"massadmin-{RUN}", ("admin",), ())
INJECTED: dict[str, Any] = {
    "id": str(uuid.uuid4()),
    "version": 99,
    "stage": "closed_won",
    "owners": ["mallory"],
    "created_by": "mallory",
    "won_quote_id": str(uuid.uuid4()),
    "order_id": str(uuid.uuid4()),
    "status": "accepted",
    "total": {"amount": "1.00", "currency": "USD"},
}
FREE_LINE = {
    "description": "Line",
    "quantity": "1",
    "unit_price": {"amount": "10.00", "currency": "USD"},
}
DEAL = {
    "title": "Mass assignment",
    "customer": {"kind": "organization", "id": f"mass-{RUN}", "name": "Mass Inc"},
    "value": {"amount": "100.00", "currency": "USD"},
}
DEFINITION = {
    "name": f"mass {RUN}",
    "trigger": {"event": "opportunity.stage_changed", "stage": "negotiation"},
    "steps": [{"after": "P30D", "action": "task", "title": "Later"}],
}

# endpoint: (service, caller, method, path, a valid body)
ENDPOINTS: dict[str, tuple[str, tuple[Any, ...], str, str, dict[str, Any]]] = {
    "open a deal": ("opportunity", REP, "POST", "/opportunities", DEAL),
    "change a deal": ("opportunity", REP, "PATCH", "/opportunities/{D}", {"title": "Renamed"}),
    "move a deal": ("opportunity", REP, "POST", "/opportunities/{D}/stage", {"stage": "lead"}),
    "lose a deal": ("opportunity", REP, "POST", "/opportunities/{D}/lose", {"reason": "r"}),
    "add an owner": ("opportunity", REP, "POST", "/opportunities/{D}/owners", {"user_id": "u"}),
    "hand to a team": ("opportunity", MANAGER, "PUT", "/opportunities/{D}/team", {"team_id": "t"}),
    "add a note": ("opportunity", REP, "POST", "/opportunities/{D}/notes", {"text": "n"}),
    "share a deal": (
        "opportunity",
        REP,
        "POST",
        "/opportunities/{D}/shares",
        {"kind": "user", "id": "u", "grant": "read"},
    ),
    "create a quote": (
        "quote", REP, "POST", "/quotes", {"opportunity_id": "{D}", "lines": [FREE_LINE]}
    ),
    "revise a quote": ("quote", REP, "PATCH", "/quotes/{Q}", {"lines": [FREE_LINE]}),
    "abandon a quote": ("quote", REP, "POST", "/quotes/{Q}/abandon", {"reason": "r"}),
    "add a product": (
        "quote",
        ADMIN,
        "POST",
        "/products",
        {"sku": f"M-{RUN}", "name": "P", "list_price": {"amount": "1.00", "currency": "USD"}},
    ),
    "change a product": ("quote", ADMIN, "PATCH", "/products/{P}", {"name": "Q"}),
    "add a bundle": (
        "quote",
        ADMIN,
        "POST",
        "/bundles",
        {
            "sku": f"B-{RUN}",
            "name": "B",
            "price": {"amount": "5.00", "currency": "USD"},
            "billing_period": "month",
            "items": [{"product_id": "{SUB}", "quantity": 1}],
        },
    ),
    "change a bundle": ("quote", ADMIN, "PATCH", "/bundles/{B}", {"name": "C"}),
    "define a sequence": ("sequence", MANAGER, "POST", "/sequences", DEFINITION),
    "revise a sequence": ("sequence", MANAGER, "PUT", "/sequences/{S}", DEFINITION),
    "enroll a deal": (
        "sequence",
        REP,
        "POST",
        "/opportunities/{D}/enrollments",
        {"sequence_id": "{S}"},
    ),
    "create a task": (
        "sequence",
        REP,
        "POST",
        "/tasks",
        {"opportunity_id": "{D}", "title": "T", "due_at": "2099-01-01T00:00:00Z"},
    ),
    "note a task": ("sequence", REP, "POST", "/tasks/{K}/notes", {"text": "n"}),
    "start a purge run": ("purge", ADMIN, "POST", "/purge/runs", {"dry_run": True}),
    "change the purge policy": ("purge", ADMIN, "PUT", "/purge/policy", {"<policy>": True}),
    "place a hold": (
        "purge", ADMIN, "POST", "/purge/holds", {"opportunity_id": "{D}", "reason": "r"}
    ),
}  # fmt: skip


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: nothing after {timeout:.0f}s")
        await asyncio.sleep(0.3)
    return found


@pytest.fixture(scope="module")
async def world(stack: Any, token: Callable[..., str]) -> AsyncIterator[dict[str, Any]]:
    clients: dict[tuple[str, str], httpx.AsyncClient] = {
        (service, who[0]): stack.client(service, token(*who))
        for service in stack.services
        for who in (REP, MANAGER, ADMIN)
    }

    def client(service: str, who: tuple[Any, ...]) -> httpx.AsyncClient:
        return clients[(service, who[0])]

    async def made(response: Awaitable[httpx.Response]) -> dict[str, Any]:
        answered = await response
        assert answered.status_code in (200, 201), answered.text
        return dict(answered.json())

    ids: dict[str, Any] = {"client": client}
    ids["D"] = (await made(client("opportunity", REP).post("/opportunities", json=DEAL)))["id"]
    quote = {"opportunity_id": ids["D"], "lines": [FREE_LINE]}
    ids["Q"] = (await made(client("quote", REP).post("/quotes", json=quote)))["id"]
    product = {"sku": f"P-{RUN}", "name": "P", "list_price": {"amount": "1.00", "currency": "USD"}}
    ids["P"] = (await made(client("quote", ADMIN).post("/products", json=product)))["id"]
    subscription = {
        "sku": f"S-{RUN}",
        "name": "S",
        "billing": "subscription",
        "billing_period": "month",
        "list_price": {"amount": "2.00", "currency": "USD"},
    }
    ids["SUB"] = (await made(client("quote", ADMIN).post("/products", json=subscription)))["id"]
    bundle = dict(ENDPOINTS["add a bundle"][4], sku=f"BB-{RUN}")
    bundle["items"] = [{"product_id": ids["SUB"], "quantity": 1}]
    ids["B"] = (await made(client("quote", ADMIN).post("/bundles", json=bundle)))["id"]
    ids["S"] = (await made(client("sequence", MANAGER).post("/sequences", json=DEFINITION)))["id"]
    task = {"opportunity_id": ids["D"], "title": "T", "due_at": "2099-01-01T00:00:00Z"}

    async def task_made() -> str | None:
        answered = await client("sequence", REP).post("/tasks", json=task)
        return str(answered.json()["id"]) if answered.status_code == 201 else None

    ids["K"] = await until(task_made, "the sequence service learns the deal")

    async def deal_settled() -> bool:
        deal = (await client("opportunity", REP).get(f"/opportunities/{ids['D']}")).json()
        return bool(deal["next_action_source"] == "task")

    # The task becomes the deal's next action over Kafka: wait, so that the deal stays
    # as it is while the tests compare it before and after.
    await until(deal_settled, "the task reaches the deal")
    policy = dict((await client("purge", ADMIN).get("/purge/policy")).json())
    del policy["version"]
    ids["policy"] = policy
    try:
        yield ids
    finally:
        await client("sequence", MANAGER).post(f"/sequences/{ids['S']}/retire")
        for each in clients.values():
            await each.aclose()


def fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, known in ids.items():
            if isinstance(known, str):
                value = value.replace("{" + key + "}", known)
        return value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_fields_a_client_must_not_set_are_never_applied(
    world: dict[str, Any], endpoint: str
) -> None:
    service, who, method, path, valid = ENDPOINTS[endpoint]
    client = world["client"](service, who)
    path = fill(path, world)
    body = world["policy"] if valid == {"<policy>": True} else fill(valid, world)
    deal_before = (
        await world["client"]("opportunity", ADMIN).get(f"/opportunities/{world['D']}")
    ).json()
    wrong: list[str] = []
    for name, value in INJECTED.items():
        if name in body:
            continue
        answered = await client.request(method, path, json={**body, name: value})
        if answered.status_code == 422:
            named = [e["field"] for e in answered.json().get("errors", [])]
            if name not in named:
                wrong.append(f"{name}: 422 naming {named}, not {name}")
        elif endpoint == "open a deal" and name == "owners":
            # A deal's owners are the request's own field: a rep may not name others.
            if answered.status_code != 403:
                wrong.append(f"{name}: {answered.status_code} {answered.text[:200]}")
        else:
            wrong.append(f"{name}: {answered.status_code} {answered.text[:200]}")
    if "lines" in body:
        lines = [{**body["lines"][0], "total": INJECTED["total"]}]
        answered = await client.request(method, path, json={**body, "lines": lines})
        if answered.status_code != 422:
            wrong.append(f"lines[0].total: {answered.status_code}")
    assert not wrong, f"{endpoint}: " + "; ".join(wrong)
    deal_after = (
        await world["client"]("opportunity", ADMIN).get(f"/opportunities/{world['D']}")
    ).json()
    assert deal_after == deal_before  # nothing refused changed the deal
