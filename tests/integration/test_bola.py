"""Broken object-level authorization, probed as an attacker would: every principal
against every endpoint of every service, over the real processes.

The records: deal D (owned by `owner`, co-owned by `coowner`, filed in team `t1`,
shared for read with `reader` and for edit with `editor`), its draft quote Q, its task
K, its enrollment E in sequence S; deals W and X, alike: W won through its quote, with
its order O, X left quiet until it is stale; a dry purge run RUN. Each cell of
`EXPECTED` is the answer written by hand from the rule (libs/common deal_access) and
each service's role rules:

    200 201 204 403 404 409 412 422   that status exactly
    in / out                          a listing holds the record / does not
    P                                 the request passed every access check: one of
                                      200 201 202 204 409 412 (a state-dependent answer)

Changes that would alter the records send `If-Match: "0"`: a caller who may make the
change gets 412 (the version check comes after every access check), one who may not
gets 403, or 404 if they may not even see the deal. A record a caller may not see is
404, never 403: an answer must not tell whether it exists.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
T1, T2, T3 = f"t1-{RUN}", f"t2-{RUN}", f"t3-{RUN}"

# name: (user, roles, teams)
PRINCIPALS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "owner": (f"owner-{RUN}", ("rep",), (T1,)),
    "coowner": (f"coowner-{RUN}", ("rep",), (T2,)),
    "team_rep": (f"teamrep-{RUN}", ("rep",), (T1,)),
    "other_rep": (f"otherrep-{RUN}", ("rep",), (T3,)),
    "reader": (f"reader-{RUN}", ("rep",), ()),
    "editor": (f"editor-{RUN}", ("rep",), ()),
    "team_manager": (f"teammgr-{RUN}", ("manager",), (T1,)),
    "other_manager": (f"othermgr-{RUN}", ("manager",), (T3,)),
    "admin": (f"admin-{RUN}", ("admin",), ()),
    "operator": (f"operator-{RUN}", ("operator",), ()),
}
COLUMNS = list(PRINCIPALS)
STALE = {"If-Match": '"0"'}
CUSTOMER = f"bola-{RUN}"


@dataclass(frozen=True)
class Probe:
    service: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    listed: str | None = None
    """For a listing: the record whose presence the cell states (`in` / `out`)."""
    per_deal: str | None = None
    """For bulk work: the record whose own result the cell states, as the status it
    stands for (changed or unchanged 200, not found 404, refused its problem's status)."""


FREE_LINE = {
    "description": "Probe line",
    "quantity": "1",
    "unit_price": {"amount": "10.00", "currency": "USD"},
}

PROBES: dict[str, Probe] = {
    # --- opportunity ---------------------------------------------------------------
    "opp GET deal": Probe("opportunity", "GET", "/opportunities/{D}"),
    "opp GET list": Probe(
        "opportunity", "GET", f"/opportunities?customer={CUSTOMER}&limit=200", listed="D"
    ),
    "opp GET history": Probe("opportunity", "GET", "/opportunities/{D}/history"),
    "opp GET notes": Probe("opportunity", "GET", "/opportunities/{D}/notes"),
    "opp GET assignments": Probe("opportunity", "GET", "/opportunities/{D}/assignments"),
    "opp GET shares": Probe("opportunity", "GET", "/opportunities/{D}/shares"),
    "opp PATCH": Probe("opportunity", "PATCH", "/opportunities/{D}", {"title": "x"}, STALE),
    "opp POST stage": Probe(
        "opportunity", "POST", "/opportunities/{D}/stage", {"stage": "qualification"}, STALE
    ),
    "opp POST lose": Probe(
        "opportunity", "POST", "/opportunities/{D}/lose", {"reason": "probe"}, STALE
    ),
    "opp POST owners": Probe(
        "opportunity", "POST", "/opportunities/{D}/owners", {"user_id": "probe"}, STALE
    ),
    "opp DELETE owner": Probe(
        "opportunity", "DELETE", "/opportunities/{D}/owners/{coowner}", None, STALE
    ),
    "opp POST claim": Probe("opportunity", "POST", "/opportunities/{D}/claim", None, STALE),
    "opp PUT team": Probe(
        "opportunity", "PUT", "/opportunities/{D}/team", {"team_id": "probe"}, STALE
    ),
    "opp POST note": Probe("opportunity", "POST", "/opportunities/{D}/notes", {"text": "probe"}),
    "opp POST share": Probe(
        "opportunity",
        "POST",
        "/opportunities/{D}/shares",
        {"kind": "user", "id": "probe", "grant": "edit"},
        STALE,
    ),
    "opp DELETE share": Probe(
        "opportunity", "DELETE", "/opportunities/{D}/shares/user/{reader}", None, STALE
    ),
    # The deal's records (competitors, decision issues, contacts): one rule for the three.
    "opp GET competitors": Probe("opportunity", "GET", "/opportunities/{D}/competitors"),
    "opp POST competitor": Probe(
        "opportunity", "POST", "/opportunities/{D}/competitors", {"name": "Probe"}, STALE
    ),
    "opp PATCH issue": Probe(
        "opportunity",
        "PATCH",
        f"/opportunities/{{D}}/decision-issues/{uuid.uuid4()}",
        {"owner": "probe"},
        STALE,
    ),
    "opp DELETE contact": Probe(
        "opportunity", "DELETE", f"/opportunities/{{D}}/contacts/{uuid.uuid4()}", None, STALE
    ),
    # Custom field definitions are not a deal's: everyone reads them, admins write them
    # (a choice field without choices, refused after the access check: nothing written).
    "opp GET custom fields": Probe("opportunity", "GET", "/custom-fields"),
    "opp POST custom field": Probe(
        "opportunity",
        "POST",
        "/custom-fields",
        {"key": f"bola_{RUN}", "label": "Probe", "type": "choice"},
    ),
    "opp PATCH custom field": Probe(
        "opportunity", "PATCH", f"/custom-fields/bola_none_{RUN}", {"label": "Probe"}
    ),
    # Bulk work answers 200 with one result per deal: the cell is the status D's own
    # result stands for. A move lead -> negotiation is refused by the state machine
    # (409) once every access check passed; assigning D's owner again changes nothing.
    "opp bulk stage": Probe(
        "opportunity",
        "POST",
        "/opportunities/bulk/stage",
        {"ids": ["{D}"], "stage": "negotiation"},
        per_deal="D",
    ),
    "opp bulk assign": Probe(
        "opportunity",
        "POST",
        "/opportunities/bulk/assign",
        {"ids": ["{D}"], "user_id": "{owner}"},
        per_deal="D",
    ),
    # --- quote ---------------------------------------------------------------------
    "quote GET": Probe("quote", "GET", "/quotes/{Q}"),
    "quote GET list": Probe("quote", "GET", "/quotes?opportunity_id={D}", listed="Q"),
    "quote POST": Probe(
        "quote", "POST", "/quotes", {"opportunity_id": "{D}", "lines": [FREE_LINE]}
    ),
    "quote PATCH": Probe("quote", "PATCH", "/quotes/{Q}", {"lines": [FREE_LINE]}, STALE),
    "quote present": Probe("quote", "POST", "/quotes/{Q}/present", None, STALE),
    "quote submit": Probe("quote", "POST", "/quotes/{Q}/submit-for-approval", None, STALE),
    "quote approve": Probe("quote", "POST", "/quotes/{Q}/approve", None, STALE),
    "quote reject": Probe(
        "quote", "POST", "/quotes/{Q}/reject-approval", {"reason": "probe"}, STALE
    ),
    "quote rework": Probe("quote", "POST", "/quotes/{Q}/rework", None, STALE),
    "quote abandon": Probe("quote", "POST", "/quotes/{Q}/abandon", {"reason": "probe"}, STALE),
    "quote accept": Probe("quote", "POST", "/quotes/{Q}/accept", None, STALE),
    "quote buy-now": Probe("quote", "POST", "/quotes/{Q}/buy-now-link"),
    # --- sequence ------------------------------------------------------------------
    "seq GET sequences": Probe("sequence", "GET", "/sequences"),
    "seq GET sequence": Probe("sequence", "GET", "/sequences/{S}"),
    "seq POST sequence": Probe(
        "sequence",
        "POST",
        "/sequences",
        {
            "name": "probe",
            "trigger": {"event": "opportunity.stage_changed", "stage": "negotiation"},
            "steps": [{"after": "P30D", "action": "task", "title": "Probe"}],
        },
    ),
    "seq retire": Probe("sequence", "POST", "/sequences/{S2}/retire"),
    "seq GET enrollments": Probe("sequence", "GET", "/opportunities/{D}/enrollments"),
    "seq POST enroll": Probe(
        "sequence", "POST", "/opportunities/{D}/enrollments", {"sequence_id": "{S}"}
    ),
    "seq pause": Probe("sequence", "POST", "/enrollments/{E}/pause"),
    "seq resume": Probe("sequence", "POST", "/enrollments/{E}/resume"),
    "seq GET tasks of deal": Probe("sequence", "GET", "/tasks?opportunity_id={D}"),
    "seq GET tasks": Probe("sequence", "GET", "/tasks?assignee={owner}", listed="K"),
    "seq GET task": Probe("sequence", "GET", "/tasks/{K}"),
    "seq POST task": Probe(
        "sequence",
        "POST",
        "/tasks",
        {"opportunity_id": "{D}", "title": "Probe", "due_at": "2099-01-01T00:00:00Z"},
    ),
    "seq POST task note": Probe("sequence", "POST", "/tasks/{K}/notes", {"text": "probe"}),
    "seq complete task": Probe("sequence", "POST", "/tasks/{K}/complete"),
    "seq cancel": Probe("sequence", "POST", "/enrollments/{E}/cancel"),
    "seq GET stale": Probe("sequence", "GET", "/stale", listed="X"),
    # --- order: reads, and writes whose body the order refuses once every access check
    # passed (a payment and a refund in another currency: 422), so no probe changes it
    "order GET": Probe("order", "GET", "/orders/{O}"),
    "order GET list": Probe("order", "GET", "/orders?opportunity_id={W}", listed="O"),
    # The deal's Orders tab answers an empty list for a deal one may not see, as for an
    # unknown one (the order service may not have heard of a new deal yet).
    "order GET of deal": Probe("order", "GET", "/opportunities/{W}/orders", listed="O"),
    "order GET ledger": Probe("order", "GET", "/orders/{O}/ledger"),
    "order POST payment": Probe(
        "order",
        "POST",
        "/orders/{O}/payments",
        {"amount": {"amount": "1.00", "currency": "JPY"}, "method": "card", "reference": "p"},
    ),
    "order POST refund": Probe(
        "order",
        "POST",
        "/orders/{O}/refunds",
        {"amount": {"amount": "1.00", "currency": "JPY"}, "reason": "probe"},
    ),
    # --- purge (operators' endpoints) ---------------------------------------------------
    "purge status": Probe("purge", "GET", "/purge/status"),
    "purge GET runs": Probe("purge", "GET", "/purge/runs"),
    "purge GET run": Probe("purge", "GET", "/purge/runs/{RUN}"),
    "purge GET items": Probe("purge", "GET", "/purge/runs/{RUN}/items"),
    "purge POST run": Probe("purge", "POST", "/purge/runs", {"dry_run": True}),
    "purge GET policy": Probe("purge", "GET", "/purge/policy"),
    "purge PUT policy": Probe("purge", "PUT", "/purge/policy", {"<policy>": True}),
    "purge GET holds": Probe("purge", "GET", "/purge/holds"),
    "purge POST hold": Probe(
        "purge", "POST", "/purge/holds", {"opportunity_id": "{D}", "reason": "probe"}
    ),
    "purge DELETE hold": Probe("purge", "DELETE", "/purge/holds/{D}"),
    "purge pause": Probe("purge", "POST", "/purge/pause"),
    "purge resume": Probe("purge", "POST", "/purge/resume"),
}

# The expected answers, written by hand. Columns, in order:
#   owner coowner team_rep other_rep reader editor team_manager other_manager admin operator
EXPECTED: dict[str, str] = {
    # A deal is seen by its owners, creator, team, shares, admins and operators; worked
    # on by those of them who are reps or managers, but not through a read share.
    "opp GET deal":          "200 200 200 404 200 200 200 404 200 200",
    "opp GET list":          "in  in  in  out in  in  in  out in  in",
    "opp GET history":       "200 200 200 404 200 200 200 404 200 200",
    "opp GET notes":         "200 200 200 404 200 200 200 404 200 200",
    "opp GET assignments":   "200 200 200 404 200 200 200 404 200 200",
    "opp GET shares":        "200 200 200 404 200 200 200 404 200 200",
    "opp PATCH":             "412 412 412 404 403 412 412 404 412 403",
    "opp POST stage":        "412 412 412 404 403 412 412 404 412 403",
    "opp POST lose":         "412 412 412 404 403 412 412 404 412 403",
    # Owners: a manager, an admin, or an owner (who brings in a co-owner).
    "opp POST owners":       "412 412 403 404 403 403 412 404 412 403",
    "opp DELETE owner":      "412 412 403 404 403 403 412 404 412 403",
    # Claiming: a rep or manager of the deal's team.
    "opp POST claim":        "412 403 412 404 403 403 412 404 403 403",
    # Handing to a team: a manager or an admin.
    "opp PUT team":          "403 403 403 404 403 403 412 404 412 403",
    "opp POST note":         "201 201 201 404 403 201 201 404 201 403",
    "opp POST share":        "412 412 412 404 403 412 412 404 412 403",
    "opp DELETE share":      "412 412 412 404 403 412 412 404 412 403",
    "opp GET competitors":   "200 200 200 404 200 200 200 404 200 200",
    "opp POST competitor":   "412 412 412 404 403 412 412 404 412 403",
    "opp PATCH issue":       "412 412 412 404 403 412 412 404 412 403",
    "opp DELETE contact":    "412 412 412 404 403 412 412 404 412 403",
    "opp GET custom fields": "200 200 200 200 200 200 200 200 200 200",
    "opp POST custom field": "403 403 403 403 403 403 403 403 422 403",
    "opp PATCH custom field": "403 403 403 403 403 403 403 403 404 403",
    "opp bulk stage":        "409 409 409 404 403 409 409 404 409 403",
    "opp bulk assign":       "200 200 403 404 403 403 200 404 200 403",
    # Quotes follow their deal. Quoting a deal one may not see is answered as quoting an
    # unknown one (422 naming opportunity_id); operators are refused before any lookup.
    "quote GET":             "200 200 200 404 200 200 200 404 200 200",
    "quote GET list":        "in  in  in  out in  in  in  out in  in",
    "quote POST":            "201 201 201 422 403 201 201 422 201 403",
    "quote PATCH":           "412 412 412 404 403 412 412 404 412 403",
    "quote present":         "412 412 412 404 403 412 412 404 412 403",
    "quote submit":          "412 412 412 404 403 412 412 404 412 403",
    # Approving a discount: a manager or an admin who may work on the deal.
    "quote approve":         "403 403 403 404 403 403 412 404 412 403",
    "quote reject":          "403 403 403 404 403 403 412 404 412 403",
    "quote rework":          "412 412 412 404 403 412 412 404 412 403",
    "quote abandon":         "412 412 412 404 403 412 412 404 412 403",
    "quote accept":          "412 412 412 404 403 412 412 404 412 403",
    # A draft cannot be bought: 409 once every access check has passed.
    "quote buy-now":         "409 409 409 404 403 409 409 404 409 403",
    # Sequence definitions are not a deal's: everyone reads them, managers and admins
    # write them.
    "seq GET sequences":     "200 200 200 200 200 200 200 200 200 200",
    "seq GET sequence":      "200 200 200 200 200 200 200 200 200 200",
    "seq POST sequence":     "403 403 403 403 403 403 201 201 201 403",
    "seq retire":            "403 403 403 403 403 403 P   P   P   403",
    # Enrollments: operators enroll, pause, resume and cancel by hand (DESIGN.md 5).
    "seq GET enrollments":   "200 200 200 404 200 200 200 404 200 200",
    "seq POST enroll":       "P   P   P   404 403 P   P   404 P   P",
    "seq pause":             "P   P   P   404 403 P   P   404 P   P",
    "seq resume":            "P   P   P   404 403 P   P   404 P   P",
    "seq GET tasks of deal": "200 200 200 404 200 200 200 404 200 200",
    "seq GET tasks":         "in  in  in  out in  in  in  out in  in",
    "seq GET task":          "200 200 200 404 200 200 200 404 200 200",
    "seq POST task":         "201 201 201 404 403 201 201 404 201 403",
    "seq POST task note":    "201 201 201 404 403 201 201 404 201 403",
    "seq complete task":     "P   P   P   404 403 P   P   404 P   403",
    "seq cancel":            "P   P   P   404 403 P   P   404 P   P",
    "seq GET stale":         "in  in  in  out in  in  in  out in  in",
    # Orders follow their deal: seen by whoever sees it, worked on (payments, refunds)
    # by whoever may work on it; a read share reads only, operators read only.
    "order GET":             "200 200 200 404 200 200 200 404 200 200",
    "order GET list":        "in  in  in  out in  in  in  out in  in",
    "order GET of deal":     "in  in  in  out in  in  in  out in  in",
    "order GET ledger":      "200 200 200 404 200 200 200 404 200 200",
    "order POST payment":    "422 422 422 404 403 422 422 404 422 403",
    "order POST refund":     "422 422 422 404 403 422 422 404 422 403",
    # Purge: operators and admins only. Holds: placing one is an upsert; the admin
    # releases the hold and the operator, right after, finds none.
    "purge status":          "403 403 403 403 403 403 403 403 200 200",
    "purge GET runs":        "403 403 403 403 403 403 403 403 200 200",
    "purge GET run":         "403 403 403 403 403 403 403 403 200 200",
    "purge GET items":       "403 403 403 403 403 403 403 403 200 200",
    "purge POST run":        "403 403 403 403 403 403 403 403 P   P",
    "purge GET policy":      "403 403 403 403 403 403 403 403 200 200",
    "purge PUT policy":      "403 403 403 403 403 403 403 403 200 200",
    "purge GET holds":       "403 403 403 403 403 403 403 403 200 200",
    "purge POST hold":       "403 403 403 403 403 403 403 403 201 201",
    "purge DELETE hold":     "403 403 403 403 403 403 403 403 204 404",
    "purge pause":           "403 403 403 403 403 403 403 403 P   P",
    "purge resume":          "403 403 403 403 403 403 403 403 P   P",
}  # fmt: skip

PASSED = {200, 201, 202, 204, 409, 412}

CELLS = [
    pytest.param(
        endpoint,
        who,
        expected,
        id=f"{endpoint} | {who}",
    )
    for endpoint, row in EXPECTED.items()
    for who, expected in zip(COLUMNS, row.split(), strict=True)
]


def test_the_matrix_covers_every_probe_and_every_principal() -> None:
    assert set(EXPECTED) == set(PROBES)
    assert len(CELLS) == len(PROBES) * len(PRINCIPALS)


@dataclass
class Records:
    ids: dict[str, str]
    clients: dict[tuple[str, str], httpx.AsyncClient]
    policy: dict[str, Any]
    stale_seen: bool = False
    sequences: list[str] = field(default_factory=list)
    """Sequences the probes defined: retired at the end, so that no other test's deal
    is enrolled in them."""

    def client(self, service: str, who: str) -> httpx.AsyncClient:
        return self.clients[(service, who)]

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            for key, known in self.ids.items():
                value = value.replace("{" + key + "}", known)
            return value
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: nothing after {timeout:.0f}s")
        await asyncio.sleep(0.3)


async def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


async def _shared_deal(records: Records, title: str) -> str:
    owner = records.client("opportunity", "owner")
    deal = await _created(
        await owner.post(
            "/opportunities",
            json={
                "title": title,
                "customer": {"kind": "organization", "id": CUSTOMER, "name": "BOLA Inc"},
                "value": {"amount": "1000.00", "currency": "USD"},
            },
        )
    )
    assert deal["team_id"] == T1  # the owner's only team
    path = f"/opportunities/{deal['id']}"
    await _created(await owner.post(f"{path}/owners", json={"user_id": records.ids["coowner"]}))
    for who, grant in (("reader", "read"), ("editor", "edit")):
        share = {"kind": "user", "id": records.ids[who], "grant": grant}
        await _created(await owner.post(f"{path}/shares", json=share))
    return str(deal["id"])


@pytest.fixture(scope="module")
async def records(stack: Any, token: Callable[..., str]) -> AsyncIterator[Records]:
    clients = {
        (service, who): stack.client(service, token(user, roles, teams))
        for service in stack.services
        for who, (user, roles, teams) in PRINCIPALS.items()
    }
    ids = {who: user for who, (user, _, _) in PRINCIPALS.items()}
    records = Records(ids, clients, {})
    try:
        await _build(records)
        yield records
    finally:
        # Never leave the purge agent paused, nor a probe's sequence live, for the tests
        # that follow.
        await records.client("purge", "admin").post("/purge/resume")
        for sequence_id in records.sequences:
            await records.client("sequence", "admin").post(f"/sequences/{sequence_id}/retire")
        for client in clients.values():
            await client.aclose()


async def _build(records: Records) -> None:
    ids = records.ids
    admin_seq = records.client("sequence", "admin")
    definition = {
        "name": f"bola {RUN}",
        "trigger": {"event": "opportunity.stage_changed", "stage": "negotiation"},
        "steps": [{"after": "P30D", "action": "task", "title": "Later"}],
    }
    ids["S"] = (await _created(await admin_seq.post("/sequences", json=definition)))["id"]
    ids["S2"] = (await _created(await admin_seq.post("/sequences", json=definition)))["id"]
    records.sequences += [ids["S"], ids["S2"]]

    ids["D"] = await _shared_deal(records, "Deal D")
    ids["W"] = await _shared_deal(records, "Deal W")
    ids["X"] = await _shared_deal(records, "Deal X")

    # The quote service learns of D and of its shares from the opportunity events.
    owner_quotes = records.client("quote", "owner")
    quote = {"opportunity_id": ids["D"], "lines": [FREE_LINE]}
    ids["Q"] = (await _created(await owner_quotes.post("/quotes", json=quote)))["id"]
    reader_quotes = records.client("quote", "reader")

    async def quote_shared() -> bool:
        return (await reader_quotes.get(f"/quotes/{ids['Q']}")).status_code == 200

    await until(quote_shared, "the quote service learns D's shares")

    # The sequence service likewise.
    owner_seq = records.client("sequence", "owner")
    task = {"opportunity_id": ids["D"], "title": "Call", "due_at": "2099-01-01T00:00:00Z"}

    async def task_created() -> dict[str, Any] | None:
        response = await owner_seq.post("/tasks", json=task)
        return dict(response.json()) if response.status_code == 201 else None

    ids["K"] = (await until(task_created, "the sequence service learns D"))["id"]
    reader_seq = records.client("sequence", "reader")

    async def task_shared() -> bool:
        return (await reader_seq.get(f"/tasks/{ids['K']}")).status_code == 200

    await until(task_shared, "the sequence service learns D's shares")
    enrolled = await owner_seq.post(
        f"/opportunities/{ids['D']}/enrollments", json={"sequence_id": ids["S"]}
    )
    ids["E"] = (await _created(enrolled))["id"]

    # W is won through its quote; the order service makes its order.
    won = {"opportunity_id": ids["W"], "lines": [FREE_LINE]}
    quote_w = (await _created(await owner_quotes.post("/quotes", json=won)))["id"]
    await _created(await owner_quotes.post(f"/quotes/{quote_w}/present"))
    await _created(await owner_quotes.post(f"/quotes/{quote_w}/accept"))
    owner_opps = records.client("opportunity", "owner")

    async def order_id() -> str | None:
        deal = (await owner_opps.get(f"/opportunities/{ids['W']}")).json()
        return deal.get("order_id")

    ids["O"] = await until(order_id, "W is won and its order made")

    # A purge run to read, and the policy to put back as it is.
    admin_purge = records.client("purge", "admin")
    ids["RUN"] = (await _created(await admin_purge.post("/purge/runs", json={"dry_run": True})))[
        "id"
    ]
    records.policy = dict((await admin_purge.get("/purge/policy")).json())
    del records.policy["version"]

    async def purge_knows_d() -> bool:
        hold = {"opportunity_id": ids["D"], "reason": "setup"}
        placed = await admin_purge.post("/purge/holds", json=hold)
        return placed.status_code == 201

    await until(purge_knows_d, "the purge service learns D")


def _listing_holds(body: Any, record_id: str) -> bool:
    items = body["items"] if isinstance(body, dict) and "items" in body else body
    return any(record_id in (str(i.get("id")), str(i.get("opportunity_id"))) for i in items)


async def _wait_until_stale(records: Records) -> None:
    """X has had no activity and has no task: stale after 3 s in the test stack."""
    if records.stale_seen:
        return
    admin = records.client("sequence", "admin")

    async def listed() -> bool:
        return _listing_holds((await admin.get("/stale")).json(), records.ids["X"])

    await until(listed, "D is reported stale")
    records.stale_seen = True


@pytest.mark.parametrize(("endpoint", "who", "expected"), CELLS)
async def test_bola_cell(records: Records, endpoint: str, who: str, expected: str) -> None:
    probe = PROBES[endpoint]
    if endpoint == "seq GET stale":
        await _wait_until_stale(records)
    body = records.fill(probe.body)
    if body == {"<policy>": True}:
        body = records.policy
    response = await records.client(probe.service, who).request(
        probe.method, records.fill(probe.path), json=body, headers=probe.headers
    )
    status = response.status_code
    if endpoint == "seq POST sequence" and status == 201:
        records.sequences.append(response.json()["id"])
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
    if probe.per_deal is not None:
        assert status == 200, f"{endpoint} as {who}: {status} {response.text[:300]}"
        (result,) = [
            r for r in response.json()["results"] if r["id"] == records.ids[probe.per_deal]
        ]
        stands_for = {"changed": 200, "unchanged": 200, "not_found": 404}.get(
            result["outcome"], (result.get("problem") or {}).get("status")
        )
        assert stands_for == int(expected), f"{endpoint} as {who}: {result}"
    elif expected in ("in", "out"):
        assert status == 200, f"{endpoint} as {who}: {status} {response.text[:300]}"
        holds = _listing_holds(response.json(), records.ids[probe.listed or ""])
        shown = "shows" if holds else "lacks"
        assert holds == (expected == "in"), f"{endpoint} as {who}: the listing {shown} it"
    elif expected == "P":
        assert status in PASSED, f"{endpoint} as {who}: {status} {response.text[:300]}"
    else:
        assert status == int(expected), f"{endpoint} as {who}: {status} {response.text[:300]}"
