"""The accept-quote saga across real processes, with DESIGN.md section 4's invariants:
at most one accepted quote per opportunity; a deal won through a quote has exactly one
order; once the deal is won or lost no other quote stays open."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, ORDER_EVENTS, QUOTE_EVENTS
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration

OPEN_QUOTE = {
    "draft",
    "pending_approval",
    "approved",
    "approval_rejected",
    "presented",
    "accept_pending",
}
DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


class Clients:
    def __init__(self, as_user: Callable[..., httpx.AsyncClient]) -> None:
        self.opportunity = as_user("opportunity")
        self.quote = as_user("quote")
        self.order = as_user("order")

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in (self.opportunity, self.quote, self.order):
            await client.aclose()

    async def open_deal(self, stage: str = "negotiation") -> str:
        response = await self.opportunity.post("/opportunities", json=DEAL)
        assert response.status_code == 201, response.text
        deal = str(response.json()["id"])
        for step in ("qualification", "proposal", "negotiation"):
            moved = await self.opportunity.post(
                f"/opportunities/{deal}/stage", json={"stage": step}
            )
            assert moved.status_code == 200, moved.text
            if step == stage:
                break
        return deal

    async def quote_for(
        self, deal: str, amount: str = "100.00", present: bool = True, **extra: Any
    ) -> str:
        response = await self.quote.post(
            "/quotes",
            json={
                "opportunity_id": deal,
                "lines": [
                    {
                        "description": "Widget",
                        "quantity": "1",
                        "unit_price": {"amount": amount, "currency": "USD"},
                    }
                ],
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        quote = str(response.json()["id"])
        if present:
            presented = await self.quote.post(f"/quotes/{quote}/present")
            assert presented.status_code == 200, presented.text
        return quote

    async def state(self, deal: str) -> dict[str, Any]:
        opportunity = (await self.opportunity.get(f"/opportunities/{deal}")).json()
        quotes = (await self.quote.get("/quotes", params={"opportunity_id": deal})).json()
        orders = (await self.order.get(f"/opportunities/{deal}/orders")).json()
        return {"opportunity": opportunity, "quotes": quotes, "orders": orders}

    async def settled(self, deal: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the saga is at rest for this deal, then check the invariants."""

        async def at_rest() -> dict[str, Any] | None:
            state = await self.state(deal)
            opportunity, quotes = state["opportunity"], state["quotes"]
            if any(q["status"] == "accept_pending" for q in quotes):
                return None
            if opportunity["stage"] in ("closed_won", "closed_lost") and any(
                q["status"] in OPEN_QUOTE for q in quotes
            ):
                return None
            if opportunity["won_quote_id"] and not (state["orders"] and opportunity["order_id"]):
                return None
            return state

        state = await eventually(at_rest, timeout)
        check_invariants(state)
        return state


def check_invariants(state: dict[str, Any]) -> None:
    opportunity, quotes, orders = state["opportunity"], state["quotes"], state["orders"]
    accepted = [q for q in quotes if q["status"] == "accepted"]
    assert len(accepted) <= 1, "an opportunity has at most one accepted quote"
    if opportunity["stage"] in ("closed_won", "closed_lost"):
        assert not [q for q in quotes if q["status"] in OPEN_QUOTE], "no quote stays open"
    if opportunity["won_quote_id"]:
        assert opportunity["stage"] == "closed_won"
        assert [q["id"] for q in accepted] == [opportunity["won_quote_id"]]
        assert len(orders) == 1, "a deal won through a quote has exactly one order"
        assert orders[0]["quote_id"] == opportunity["won_quote_id"]
        assert opportunity["order_id"] == orders[0]["id"]
    else:
        assert accepted == []
        assert orders == []


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def test_a_deal_is_won_when_the_customer_accepts_a_quote(stack, as_user) -> None:
    async with Clients(as_user) as api:
        deal = await api.open_deal(stage="qualification")
        quote_a = await api.quote_for(deal, "1200.00", present=False)
        await api.opportunity.post(f"/opportunities/{deal}/stage", json={"stage": "proposal"})
        await api.quote.post(f"/quotes/{quote_a}/present")
        quote_b = await api.quote_for(deal, "1500.00")
        abandoned = await api.quote.post(
            f"/quotes/{quote_b}/abandon", json={"reason": "customer prefers A"}
        )
        assert abandoned.json()["status"] == "abandoned"
        await api.opportunity.post(f"/opportunities/{deal}/stage", json={"stage": "negotiation"})
        flow = f"accept-{uuid.uuid4()}"
        accepted = await api.quote.post(
            f"/quotes/{quote_a}/accept", headers={"X-Correlation-ID": flow}
        )
        assert accepted.status_code == 202
        state = await api.settled(deal)

    assert state["opportunity"]["stage"] == "closed_won"
    assert state["opportunity"]["won_quote_id"] == quote_a
    assert {q["id"]: q["status"] for q in state["quotes"]} == {
        quote_a: "accepted",
        quote_b: "abandoned",
    }
    assert state["orders"][0]["total"] == {"amount": "1200.00", "currency": "USD"}

    topics = (OPPORTUNITY_EVENTS, QUOTE_EVENTS, ORDER_EVENTS)
    async with TopicReader(stack.kafka.bootstrap_servers, *topics) as reader:
        await reader.wait_for(
            lambda _: any(
                r.event.get("type") == "opportunity.updated"
                and r.event.get("correlationid") == flow
                for r in reader.of(deal)
            )
        )
    in_flow = [r.event["type"] for r in reader.of(deal) if r.event["correlationid"] == flow]
    assert sorted(in_flow) == sorted(
        [
            "quote.acceptance_requested",
            "opportunity.stage_changed",
            "opportunity.won",
            "quote.accepted",
            "order.created",
            "opportunity.updated",
        ]
    ), "one correlation id runs through every event of the accept flow"


async def test_two_concurrent_accepts_give_one_winner_and_one_rejection(stack, as_user) -> None:
    async with Clients(as_user) as api:
        deal = await api.open_deal()
        first, second = await api.quote_for(deal), await api.quote_for(deal)
        answers = await asyncio.gather(
            api.quote.post(f"/quotes/{first}/accept"), api.quote.post(f"/quotes/{second}/accept")
        )
        assert [a.status_code for a in answers] == [202, 202]
        state = await api.settled(deal)

    statuses = Counter(q["status"] for q in state["quotes"])
    assert statuses == Counter({"accepted": 1, "abandoned": 1})
    loser = next(q for q in state["quotes"] if q["status"] == "abandoned")
    assert "acceptance refused" in loser["status_reason"]
    async with TopicReader(stack.kafka.bootstrap_servers, QUOTE_EVENTS) as reader:
        await reader.wait_for(
            lambda _: any(r.event["type"] == "quote.acceptance_rejected" for r in reader.of(deal))
        )
    rejected = [
        r.event["data"]["quote_id"]
        for r in reader.of(deal)
        if r.event["type"] == "quote.acceptance_rejected"
    ]
    assert rejected == [loser["id"]]


async def test_an_accept_racing_a_lose_ends_consistent(stack, as_user) -> None:
    outcomes = set()
    async with Clients(as_user) as api:
        for _ in range(4):
            deal = await api.open_deal()
            quote = await api.quote_for(deal)
            accept, lose = await asyncio.gather(
                api.quote.post(f"/quotes/{quote}/accept"),
                api.opportunity.post(f"/opportunities/{deal}/lose", json={"reason": "budget"}),
            )
            state = await api.settled(deal)
            stage = state["opportunity"]["stage"]
            outcomes.add(stage)
            if stage == "closed_won":
                assert lose.status_code == 409
                assert state["quotes"][0]["status"] == "accepted"
            else:
                assert stage == "closed_lost"
                assert state["quotes"][0]["status"] == "abandoned"
                assert accept.status_code in (202, 409)
    assert outcomes <= {"closed_won", "closed_lost"}


async def test_an_expired_or_abandoned_quote_cannot_be_accepted(stack, as_user) -> None:
    async with Clients(as_user) as api:
        deal = await api.open_deal()
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        expiring = await api.quote_for(deal, valid_until=soon)
        abandoned = await api.quote_for(deal)
        await api.quote.post(f"/quotes/{abandoned}/abandon", json={"reason": "withdrawn"})

        async def expired_by_the_job() -> bool:
            found = (await api.quote.get(f"/quotes/{expiring}")).json()
            return bool(found["status"] == "expired")

        await eventually(expired_by_the_job, timeout=20)
        for quote in (expiring, abandoned):
            refused = await api.quote.post(f"/quotes/{quote}/accept")
            assert refused.status_code == 409, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
        state = await api.settled(deal)
    assert state["opportunity"]["stage"] == "negotiation"


async def test_the_quote_service_killed_mid_saga_finishes_it_after_restart(stack, as_user) -> None:
    quote_service = stack.services["quote"]
    async with Clients(as_user) as api:
        deal = await api.open_deal()
        quote = await api.quote_for(deal)
        other = await api.quote_for(deal)
        assert (await api.quote.post(f"/quotes/{quote}/accept")).status_code == 202
        quote_service.kill()
        await quote_service.wait_killed()
        await quote_service.start()
        await quote_service.wait_ready(timeout=90)
        state = await api.settled(deal, timeout=90)
    assert state["opportunity"]["won_quote_id"] == quote
    assert {q["id"]: q["status"] for q in state["quotes"]} == {
        quote: "accepted",
        other: "abandoned",
    }


_CONSUMED = re.compile(
    r'^dealflow_events_consumed_total\{group="([^"]+)",outcome="duplicate",type="[^"]+"\} (\S+)$',
    re.MULTILINE,
)


async def duplicates_seen(api: Clients) -> int:
    total = 0.0
    for client in (api.opportunity, api.quote, api.order):
        text = (await client.get("/metrics")).text
        total += sum(float(value) for _, value in _CONSUMED.findall(text))
    return int(total)


HANDLED = {
    "quote.acceptance_requested",
    "order.created",  # by the opportunity service
    "opportunity.created",
    "opportunity.updated",
    "opportunity.stage_changed",
    "opportunity.assigned",
    "opportunity.won",
    "opportunity.lost",
    "opportunity.acceptance_refused",  # by the quote service
    "quote.accepted",  # by the order service
}


async def test_every_event_delivered_twice_changes_nothing_the_second_time(stack, as_user) -> None:
    topics = (OPPORTUNITY_EVENTS, QUOTE_EVENTS, ORDER_EVENTS)
    async with Clients(as_user) as api:
        deal = await api.open_deal()
        winner, loser = await api.quote_for(deal), await api.quote_for(deal)
        await asyncio.gather(
            api.quote.post(f"/quotes/{winner}/accept"), api.quote.post(f"/quotes/{loser}/accept")
        )
        before = await api.settled(deal)
        async with TopicReader(stack.kafka.bootstrap_servers, *topics) as reader:
            await reader.wait_for(
                lambda _: any(r.event["type"] == "opportunity.updated" for r in reader.of(deal))
            )
            await reader.settle(2.0)
        originals = reader.of(deal)
        baseline = await duplicates_seen(api)

        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await producer.start()
        try:
            for record in originals:
                await producer.send_and_wait(
                    record.topic, record.value, key=record.key, headers=list(record.headers.items())
                )
        finally:
            await producer.stop()
        expected = sum(1 for r in originals if r.event["type"] in HANDLED)

        async def all_skipped() -> bool:
            return await duplicates_seen(api) >= baseline + expected

        await eventually(all_skipped, timeout=60)
        after = await api.settled(deal)

    assert after == before
    async with TopicReader(stack.kafka.bootstrap_servers, *topics) as again:
        await again.wait_for(lambda _: len(again.of(deal)) >= 2 * len(originals))
        await again.settle(2.0)
    assert Counter(r.event["id"] for r in again.of(deal)) == Counter(
        {r.event["id"]: 2 for r in originals}
    ), "the second delivery caused no new event"
