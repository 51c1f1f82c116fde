"""Custom fields, search and bulk work over the real opportunity process, the real broker
and PostgreSQL: what a rep types is checked, found and carried to subscribers on Kafka.

Definitions are shared by every test of the session: the fields defined here are not
required (a required one would refuse every other test's deals) and are retired at the
end.
"""

from __future__ import annotations

import uuid

import pytest

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration


async def test_custom_fields_search_and_bulk_work_over_the_real_services(stack, as_user) -> None:
    run = uuid.uuid4().hex[:8]
    tier, seats = f"tier_{run}", f"seats_{run}"
    # A word both search back ends keep whole: letters only.
    word = "".join(chr(ord("a") + int(c, 16)) for c in run)
    admin = as_user("opportunity", f"admin-{run}", roles=("admin",), teams=())
    rep = as_user("opportunity", f"rep-{run}", roles=("rep",), teams=(f"team-{run}",))
    stranger = as_user("opportunity", f"other-{run}", roles=("rep",), teams=(f"else-{run}",))
    async with admin, rep, stranger:
        for body in (
            {"key": tier, "label": "Tier", "type": "choice", "choices": ["gold", "silver"]},
            {"key": seats, "label": "Seats", "type": "number", "tab": "Sizing"},
        ):
            response = await admin.post("/custom-fields", json=body)
            assert response.status_code == 201, response.text
        try:
            deals = []
            for i, chosen in enumerate(("gold", "gold", "silver")):
                response = await rep.post(
                    "/opportunities",
                    json={
                        "title": f"Fleet {word} {i}",
                        "customer": {"kind": "organization", "id": f"c-{run}", "name": "Acme"},
                        "value": {"amount": "1000.00", "currency": "USD"},
                        "custom_fields": {tier: chosen, seats: 10 + i},
                    },
                )
                assert response.status_code == 201, response.text
                deals.append(response.json())

            # A value outside its list is refused, naming the field.
            response = await rep.patch(
                f"/opportunities/{deals[0]['id']}", json={"custom_fields": {tier: "bronze"}}
            )
            assert response.status_code == 422
            assert response.json()["errors"][0]["field"] == f"custom_fields.{tier}"

            # A note is searchable as soon as it is written.
            note = await rep.post(
                f"/opportunities/{deals[2]['id']}/notes",
                json={"text": f"Budget {word}x approved"},
            )
            assert note.status_code == 201
            found = await rep.get("/opportunities", params={"q": f"budget {word}x"})
            assert [d["id"] for d in found.json()["items"]] == [deals[2]["id"]]
            nothing = await stranger.get("/opportunities", params={"q": word})
            assert nothing.json()["items"] == []

            # The gold deals, by filter, move to qualification, each on its own.
            gold = await rep.get("/opportunities", params={f"cf.{tier}": "gold", "q": word})
            assert {d["id"] for d in gold.json()["items"]} == {d["id"] for d in deals[:2]}
            response = await rep.post(
                "/opportunities/bulk/stage",
                json={
                    "filter": {"q": word, "custom_fields": {tier: "gold"}},
                    "stage": "qualification",
                },
            )
            assert response.status_code == 200, response.text
            bulk = response.json()
            assert bulk["changed"] == 2
            assert {r["id"] for r in bulk["results"]} == {d["id"] for d in deals[:2]}

            # A bulk move the state machine forbids for one deal refuses that one only.
            response = await rep.post(
                "/opportunities/bulk/stage",
                json={"ids": [d["id"] for d in deals], "stage": "proposal"},
            )
            outcomes = {r["id"]: r["outcome"] for r in response.json()["results"]}
            assert outcomes == {
                deals[0]["id"]: "changed",
                deals[1]["id"]: "changed",
                deals[2]["id"]: "refused",
            }

            # Subscribers read the values in the deal's events, in order.
            async with TopicReader(stack.kafka.bootstrap_servers, OPPORTUNITY_EVENTS) as reader:
                first = deals[0]["id"]
                await reader.wait_for(
                    lambda _: (
                        sum(
                            r.event.get("type") == "opportunity.stage_changed"
                            for r in reader.of(first)
                        )
                        >= 2
                    )
                )
            events = [r.event for r in reader.of(first)]
            assert events[0]["type"] == "opportunity.created"
            assert events[0]["data"]["opportunity"]["custom_fields"] == {tier: "gold", seats: "10"}
            moves = [e["data"]["to_stage"] for e in events if e["type"].endswith("stage_changed")]
            assert moves == ["qualification", "proposal"]
        finally:
            for key in (tier, seats):
                await admin.patch(f"/custom-fields/{key}", json={"retired": True})
