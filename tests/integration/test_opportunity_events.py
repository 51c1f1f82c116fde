"""Every state change of a deal reaches Kafka once, in order, sequence increasing by one,
readable by a plain Kafka client."""

from __future__ import annotations

import uuid

import pytest

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


async def test_each_change_arrives_once_in_order_with_contiguous_sequence(stack, as_user) -> None:
    async with as_user("opportunity") as api:
        won = (await api.post("/opportunities", json=DEAL)).json()["id"]
        flows = {}
        for stage in ("qualification", "proposal", "negotiation", "closed_won"):
            flow_id = f"flow-{uuid.uuid4()}"
            response = await api.post(
                f"/opportunities/{won}/stage",
                json={"stage": stage},
                headers={"X-Correlation-ID": flow_id},
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-correlation-id"] == flow_id
            flows[stage] = flow_id
        lost = (await api.post("/opportunities", json=DEAL)).json()["id"]
        await api.post(f"/opportunities/{lost}/notes", json={"reason": "call", "text": "hi"})
        await api.post(f"/opportunities/{lost}/lose", json={"reason": "budget cut"})
        history = (await api.get(f"/opportunities/{won}/history")).json()

    async with TopicReader(stack.kafka.bootstrap_servers, OPPORTUNITY_EVENTS) as reader:
        await reader.wait_for(lambda _: len(reader.of(won)) >= 6 and len(reader.of(lost)) >= 4)
        await reader.settle()

    won_events = reader.of(won)
    assert [r.event["type"] for r in won_events] == [
        "opportunity.created",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.stage_changed",
        "opportunity.won",
    ]
    assert [r.event["sequence"] for r in won_events] == [1, 2, 3, 4, 5, 6]
    assert len({r.event["id"] for r in won_events}) == 6, "an event arrived twice"
    assert {r.key for r in won_events} == {won.encode()}
    assert {r.partition for r in won_events} == {won_events[0].partition}
    assert all(r.headers["content-type"] == b"application/cloudevents+json" for r in won_events)
    assert all(r.event["source"] == "/dealflow/opportunity" for r in won_events)
    moves = [
        (r.event["data"]["from_stage"], r.event["data"]["to_stage"])
        for r in won_events
        if r.event["type"] == "opportunity.stage_changed"
    ]
    assert moves == [(h["from_stage"], h["to_stage"]) for h in history[1:]]
    # the stage move and the win it caused belong to the same flow as the request
    assert won_events[4].event["correlationid"] == flows["closed_won"]
    assert won_events[5].event["correlationid"] == flows["closed_won"]

    lost_events = reader.of(lost)
    assert [r.event["type"] for r in lost_events] == [
        "opportunity.created",
        "opportunity.note_added",
        "opportunity.stage_changed",
        "opportunity.lost",
    ]
    assert [r.event["sequence"] for r in lost_events] == [1, 2, 3, 4]
    assert lost_events[-1].event["data"]["reason"] == "budget cut"
