"""The Sharing tab, the team a deal is filed in, and the audit of refusals, on a real
database (PostgreSQL and SQLite).

Users and teams are random per test: the module's database is shared by its tests.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from dealflow_opportunity.adapters.tables import opportunity_shares

from .test_api import assert_problem

REP = ("rep",)
MANAGER = ("manager",)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def share(api: Any, deal_id: str, body: dict[str, Any], **caller: Any) -> Any:
    return await api.call("POST", f"/opportunities/{deal_id}/shares", body, **caller)


async def refusals(api: Any, kind: str) -> float:
    text = (await api.http.get("/metrics")).text
    found = re.search(rf'^dealflow_refusals_total{{kind="{kind}"}} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


async def test_a_deal_shared_for_read_is_seen_but_not_changed(api) -> None:
    owner, reader = name("owner"), name("reader")
    deal = await api.open(user=owner, teams=())
    path = f"/opportunities/{deal['id']}"
    assert (await api.call("GET", path, user=reader, teams=())).status_code == 404

    response = await share(
        api, deal["id"], {"kind": "user", "id": reader, "grant": "read"}, user=owner, teams=()
    )

    assert response.status_code == 200, response.text
    assert response.json()["shares"] == [{"kind": "user", "id": reader, "grant": "read"}]
    assert response.json()["version"] == 2
    assert await api.events_of(deal["id"]) == [
        ("opportunity.created", 1),
        ("opportunity.shared", 2),
    ]
    seen = await api.call("GET", path, user=reader, teams=())
    assert seen.status_code == 200
    listed = await api.call("GET", "/opportunities", user=reader, teams=())
    assert [d["id"] for d in listed.json()["items"]] == [deal["id"]]
    tab = await api.call("GET", f"{path}/shares", user=reader, teams=())
    assert tab.json() == [{"kind": "user", "id": reader, "grant": "read"}]
    before = await api.row_counts(opportunity_shares)
    change = await api.call("PATCH", path, {"title": "Mine now"}, user=reader, teams=())
    assert_problem(change, 403)
    reshare = await share(
        api, deal["id"], {"kind": "user", "id": name("x"), "grant": "edit"}, user=reader, teams=()
    )
    assert_problem(reshare, 403)
    assert await api.row_counts(opportunity_shares) == before


async def test_a_deal_shared_for_edit_is_worked_on(api) -> None:
    owner, editor = name("owner"), name("editor")
    deal = await api.open(user=owner, teams=())
    await share(
        api, deal["id"], {"kind": "user", "id": editor, "grant": "edit"}, user=owner, teams=()
    )

    moved = await api.call(
        "POST",
        f"/opportunities/{deal['id']}/stage",
        {"stage": "qualification"},
        user=editor,
        teams=(),
    )

    assert moved.status_code == 200, moved.text
    assert moved.json()["stage"] == "qualification"


async def test_a_team_share_reaches_every_member_and_sharing_again_changes_the_grant(api) -> None:
    owner, team, member = name("owner"), name("team"), name("member")
    deal = await api.open(user=owner, teams=())
    path = f"/opportunities/{deal['id']}"
    await share(
        api, deal["id"], {"kind": "team", "id": team, "grant": "read"}, user=owner, teams=()
    )
    listed = await api.call("GET", "/opportunities", user=member, teams=(team,))
    assert [d["id"] for d in listed.json()["items"]] == [deal["id"]]
    assert_problem(await api.call("PATCH", path, {"title": "x"}, user=member, teams=(team,)), 403)

    again = await share(
        api, deal["id"], {"kind": "team", "id": team, "grant": "edit"}, user=owner, teams=()
    )
    same = await share(
        api, deal["id"], {"kind": "team", "id": team, "grant": "edit"}, user=owner, teams=()
    )

    assert again.json()["shares"] == [{"kind": "team", "id": team, "grant": "edit"}]
    assert same.json()["version"] == again.json()["version"]  # nothing changed, no event
    changed = await api.call("PATCH", path, {"title": "Renamed"}, user=member, teams=(team,))
    assert changed.status_code == 200, changed.text
    types = [t for t, _ in await api.events_of(deal["id"])]
    assert types == [
        "opportunity.created",
        "opportunity.shared",
        "opportunity.shared",
        "opportunity.updated",
    ]


async def test_a_revoked_share_hides_the_deal_again(api) -> None:
    owner, reader = name("owner"), name("reader")
    deal = await api.open(user=owner, teams=())
    await share(
        api, deal["id"], {"kind": "user", "id": reader, "grant": "read"}, user=owner, teams=()
    )

    revoked = await api.call(
        "DELETE", f"/opportunities/{deal['id']}/shares/user/{reader}", user=owner, teams=()
    )

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["shares"] == []
    assert (await api.events_of(deal["id"]))[-1] == ("opportunity.unshared", 3)
    assert (
        await api.call("GET", f"/opportunities/{deal['id']}", user=reader, teams=())
    ).status_code == 404
    listed = await api.call("GET", "/opportunities", user=reader, teams=())
    assert listed.json() == {"items": [], "next_cursor": None}


async def test_bad_shares_are_refused_and_write_nothing(api) -> None:
    owner, other = name("owner"), name("other")
    deal = await api.open(user=owner, teams=())
    path = f"/opportunities/{deal['id']}/shares"
    before = await api.row_counts(opportunity_shares)
    as_owner = {"user": owner, "teams": ()}

    assert_problem(
        await share(api, deal["id"], {"kind": "user", "id": other, "grant": "own"}, **as_owner),
        422,
        "grant",
    )
    assert_problem(
        await share(api, deal["id"], {"kind": "robot", "id": other, "grant": "read"}, **as_owner),
        422,
        "kind",
    )
    assert_problem(
        await share(api, deal["id"], {"kind": "user", "id": owner, "grant": "edit"}, **as_owner),
        422,
        "id",
    )
    assert_problem(
        await share(api, deal["id"], {"kind": "user", "id": " ", "grant": "read"}, **as_owner),
        422,
        "id",
    )
    assert_problem(await api.call("DELETE", f"{path}/user/{other}", **as_owner), 404)
    assert_problem(await api.call("DELETE", f"{path}/robot/{other}", **as_owner), 422)
    # Someone who cannot see the deal learns nothing, not even that it exists.
    unseen = await share(
        api, deal["id"], {"kind": "user", "id": other, "grant": "read"}, user=other, teams=()
    )
    unknown = await share(
        api, str(uuid.uuid4()), {"kind": "user", "id": other, "grant": "read"}, user=other, teams=()
    )
    assert_problem(unseen, 404)
    assert_problem(unknown, 404)
    assert unseen.json()["detail"].replace(deal["id"], "ID") == unknown.json()["detail"].replace(
        unknown.json()["instance"].split("/")[2], "ID"
    )
    assert await api.row_counts(opportunity_shares) == before
    assert await api.events_of(deal["id"]) == [("opportunity.created", 1)]


async def test_a_rep_of_one_team_files_the_deal_in_that_team(api) -> None:
    rep, team, manager = name("rep"), name("team"), name("manager")
    filed = await api.open(user=rep, teams=(team,))
    outside = await api.open(user=rep, teams=(team,), team_id=None)
    torn = await api.open(user=rep, teams=(team, name("other")))

    assert filed["team_id"] == team
    assert outside["team_id"] is None
    assert torn["team_id"] is None  # two teams: the request must say which
    listed = await api.call("GET", "/opportunities", user=manager, roles=MANAGER, teams=(team,))
    assert [d["id"] for d in listed.json()["items"]] == [filed["id"]]


async def test_refusals_are_counted_by_kind(api) -> None:
    owner, stranger, reader = name("owner"), name("stranger"), name("reader")
    deal = await api.open(user=owner, teams=())
    path = f"/opportunities/{deal['id']}"
    await share(
        api, deal["id"], {"kind": "user", "id": reader, "grant": "read"}, user=owner, teams=()
    )
    counts = {
        k: await refusals(api, k) for k in ("token", "not_visible", "forbidden", "transition")
    }

    await api.call("GET", path, user=stranger, teams=())  # exists, not visible: 404
    await api.call("GET", f"/opportunities/{uuid.uuid4()}", user=stranger)  # unknown: no refusal
    await api.http.get(path, headers={"Authorization": "Bearer not-a-token"})
    await api.call("PATCH", path, {"title": "x"}, user=reader, teams=())  # may only read: 403
    await api.call("POST", f"{path}/stage", {"stage": "closed_won"}, user=owner, teams=())

    assert await refusals(api, "not_visible") == counts["not_visible"] + 1
    assert await refusals(api, "token") == counts["token"] + 1
    assert await refusals(api, "transition") == counts["transition"] + 1
    assert await refusals(api, "forbidden") == counts["forbidden"] + 1
