"""A deal's competitors, decision issues and contacts on PostgreSQL and SQLite: added,
changed and removed by whoever may work on the deal, each change a new version with
its `opportunity.updated`, bad input refused with nothing written."""

from __future__ import annotations

import uuid

import pytest

from .test_api import assert_problem

KINDS = [
    ("competitors", {"name": "Globex", "strengths": "Price"}, {"status": "lost_to"}),
    ("decision-issues", {"description": "Security review"}, {"owner": "dave"}),
    ("contacts", {"name": "Carla", "role": "champion"}, {"email": "carla@acme.test"}),
]


@pytest.mark.parametrize(("path", "body", "change"), KINDS, ids=[k[0] for k in KINDS])
async def test_a_record_is_added_changed_and_removed_with_its_events(
    api, path, body, change
) -> None:
    deal = await api.open()
    base = f"/opportunities/{deal['id']}/{path}"
    kind = path.replace("-", "_")

    response = await api.call("POST", base, body, headers={"If-Match": '"1"'})
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"2"'
    (added,) = response.json()[kind]
    assert added.items() >= body.items()
    assert response.headers["location"] == f"{base}/{added['id']}"

    response = await api.call("PATCH", f"{base}/{added['id']}", change)
    assert response.status_code == 200, response.text
    assert response.json()[kind][0] == {**added, **change}
    assert (await api.call("GET", base)).json() == [{**added, **change}]

    response = await api.call("DELETE", f"{base}/{added['id']}")
    assert response.status_code == 200, response.text
    assert response.json()[kind] == []

    events = await api.envelopes_of(deal["id"])
    updates = [e["data"] for e in events if e["type"] == "opportunity.updated"]
    assert [u["changed_fields"] for u in updates] == [[kind]] * 3
    assert updates[1]["opportunity"][kind] == [{**added, **change}]


async def test_a_resolved_issue_needs_its_resolution(api) -> None:
    deal = await api.open()
    base = f"/opportunities/{deal['id']}/decision-issues"
    before = await api.written()
    response = await api.call("POST", base, {"description": "Budget", "status": "resolved"})
    assert_problem(response, 422, "resolution")
    assert await api.written() == before

    issue = (await api.call("POST", base, {"description": "Budget"})).json()["decision_issues"][0]
    before = await api.written()
    response = await api.call("PATCH", f"{base}/{issue['id']}", {"status": "resolved"})
    assert_problem(response, 422, "resolution")
    assert await api.written() == before
    response = await api.call(
        "PATCH", f"{base}/{issue['id']}", {"status": "resolved", "resolution": "CFO signed"}
    )
    assert response.json()["decision_issues"][0]["status"] == "resolved"


BAD = [
    ("competitor-without-name", "competitors", {"strengths": "x"}, "name"),
    ("competitor-unknown-status", "competitors", {"name": "G", "status": "winning"}, "status"),
    ("issue-without-description", "decision-issues", {"owner": "dave"}, "description"),
    ("contact-unknown-role", "contacts", {"name": "C", "role": "boss"}, "role"),
    ("contact-without-role", "contacts", {"name": "C"}, "role"),
    ("unknown-member", "contacts", {"name": "C", "role": "user", "age": 3}, "age"),
]


@pytest.mark.parametrize(("case", "path", "body", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_refused_and_writes_nothing(api, case, path, body, field) -> None:
    deal = await api.open()
    before = await api.written()
    response = await api.call("POST", f"/opportunities/{deal['id']}/{path}", body)
    assert_problem(response, 422, field)
    assert await api.written() == before


async def test_only_whoever_may_work_on_the_deal_changes_its_records(api) -> None:
    deal = await api.open(user="alice", teams=("emea",))
    base = f"/opportunities/{deal['id']}/competitors"
    before = await api.written()
    # Another team's rep may not see it: answered as an unknown deal.
    response = await api.call("POST", base, {"name": "G"}, user="bob", teams=("apac",))
    assert_problem(response, 404)
    assert_problem(await api.call("GET", base, user="bob", teams=("apac",)), 404)
    # An operator reads but does not change.
    response = await api.call("POST", base, {"name": "G"}, user="op", roles=("operator",))
    assert_problem(response, 403)
    assert await api.written() == before
    # An unknown record of a visible deal is 404; a stale version 412.
    response = await api.call("DELETE", f"{base}/{uuid.uuid4()}")
    assert_problem(response, 404)
    response = await api.call("POST", base, {"name": "G"}, headers={"If-Match": '"7"'})
    assert_problem(response, 412)
    assert await api.written() == before
