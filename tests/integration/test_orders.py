"""The Orders tab over real processes, the real broker and PostgreSQL: a won deal has
exactly one order whatever is delivered twice or killed; payments, refunds and invoice
numbers stay right under concurrent requests; the PDF says what the JSON says; and a
rep of another team finds nothing."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pypdf import PdfReader

from dealflow_common.contracts.topics import ORDER_EVENTS, QUOTE_EVENTS
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Fleet of vans",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "5000.00", "currency": "USD"},
}
_METRIC = re.compile(r"^dealflow_events_consumed_total\{([^}]*)\} (\S+)$", re.MULTILINE)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s")
        await asyncio.sleep(0.1)


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


class Api:
    """alice: a rep (and manager) of team emea, who opens the deals."""

    def __init__(self, as_user: Callable[..., httpx.AsyncClient]) -> None:
        self.opportunity = as_user("opportunity")
        self.quote = as_user("quote")
        self.order = as_user("order")

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in (self.opportunity, self.quote, self.order):
            await client.aclose()

    async def accepted_quote(
        self, amount: str = "1000.00", team: str | None = None
    ) -> tuple[str, str]:
        """A deal in negotiation (of `team`) whose quote was accepted: (deal, quote)."""
        created = await self.opportunity.post("/opportunities", json=DEAL)
        assert created.status_code == 201, created.text
        deal = str(created.json()["id"])
        if team:
            handed = await self.opportunity.put(
                f"/opportunities/{deal}/team", json={"team_id": team}
            )
            assert handed.status_code == 200, handed.text
        for stage in ("qualification", "proposal", "negotiation"):
            moved = await self.opportunity.post(
                f"/opportunities/{deal}/stage", json={"stage": stage}
            )
            assert moved.status_code == 200, moved.text
        quote = await self.quote.post(
            "/quotes",
            json={
                "opportunity_id": deal,
                "lines": [
                    {"description": "Van", "quantity": "1", "unit_price": usd(amount)},
                ],
            },
        )
        assert quote.status_code == 201, quote.text
        quote_id = str(quote.json()["id"])
        assert (await self.quote.post(f"/quotes/{quote_id}/present")).status_code == 200
        assert (await self.quote.post(f"/quotes/{quote_id}/accept")).status_code == 202
        return deal, quote_id

    async def order_of(self, deal: str, timeout: float = 60.0) -> dict[str, Any]:
        """The deal's one order, once the opportunity shows its id too."""

        async def settled() -> dict[str, Any] | None:
            orders = (await self.order.get(f"/opportunities/{deal}/orders")).json()
            opportunity = (await self.opportunity.get(f"/opportunities/{deal}")).json()
            if orders and opportunity["order_id"]:
                assert len(orders) == 1, orders
                assert opportunity["order_id"] == orders[0]["id"]
                return dict(orders[0])
            return None

        return dict(await eventually(settled, timeout))

    async def won_order(self, amount: str = "1000.00", team: str | None = None) -> dict[str, Any]:
        deal, _ = await self.accepted_quote(amount, team)
        return await self.order_of(deal)


async def consumed(client: httpx.AsyncClient, event_type: str) -> dict[str, float]:
    """The order service's consumer counts for one event type, by outcome."""
    counts: Counter[str] = Counter()
    for labels, value in _METRIC.findall((await client.get("/metrics")).text):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if parsed.get("group") == "order-service" and parsed.get("type") == event_type:
            counts[parsed["outcome"]] += float(value)
    return dict(counts)


async def order_created_ids(stack: Any, deal: str) -> set[str]:
    async with TopicReader(stack.kafka.bootstrap_servers, ORDER_EVENTS) as reader:
        await reader.wait_for(
            lambda _: any(r.event["type"] == "order.created" for r in reader.of(deal))
        )
        await reader.settle(1.5)
    return {r.event["id"] for r in reader.of(deal) if r.event["type"] == "order.created"}


async def test_quote_accepted_delivered_twice_or_restated_makes_one_order(stack, as_user) -> None:
    async with Api(as_user) as api:
        deal, quote = await api.accepted_quote()
        order = await api.order_of(deal)
        async with TopicReader(stack.kafka.bootstrap_servers, QUOTE_EVENTS) as reader:
            await reader.wait_for(
                lambda _: any(r.event["type"] == "quote.accepted" for r in reader.of(deal))
            )
        (original,) = [r for r in reader.of(deal) if r.event["type"] == "quote.accepted"]
        # The same record again (a relay's second publish), and the same fact under a new
        # event id (as a second acceptance event of the quote would be).
        new_id = str(uuid.uuid4())
        restated = orjson.dumps({**original.event, "id": new_id})
        restated_headers = {**original.headers, "ce_id": new_id.encode()}
        before = await consumed(api.order, "quote.accepted")
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await producer.start()
        try:
            for value, headers in (
                (original.value, original.headers),
                (restated, restated_headers),
            ):
                await producer.send_and_wait(
                    QUOTE_EVENTS, value, key=original.key, headers=list(headers.items())
                )
        finally:
            await producer.stop()

        async def both_taken() -> bool:
            now = await consumed(api.order, "quote.accepted")
            return (
                now.get("duplicate", 0) >= before.get("duplicate", 0) + 1
                and now.get("applied", 0) >= before.get("applied", 0) + 1
            )

        await eventually(both_taken)
        orders = (await api.order.get(f"/opportunities/{deal}/orders")).json()
    assert [(o["id"], o["quote_id"]) for o in orders] == [(order["id"], quote)]
    assert len(await order_created_ids(stack, deal)) == 1


async def test_the_order_service_killed_while_creating_orders_makes_each_once(
    stack, as_user
) -> None:
    order_service = stack.services["order"]
    async with Api(as_user) as api:
        deals = [
            deal for deal, _ in await asyncio.gather(*(api.accepted_quote() for _ in range(3)))
        ]
        # Killed the moment the acceptances are on the topic: the orders are being
        # created, committed but not acknowledged, or not yet begun.
        async with TopicReader(stack.kafka.bootstrap_servers, QUOTE_EVENTS) as reader:
            await reader.wait_for(
                lambda _: all(
                    any(r.event["type"] == "quote.accepted" for r in reader.of(d)) for d in deals
                ),
                timeout=60,
            )
        order_service.kill()
        await order_service.wait_killed()
        await order_service.start()
        await order_service.wait_ready(timeout=90)
        orders = [await api.order_of(deal, timeout=90) for deal in deals]
    assert len({o["id"] for o in orders}) == 3
    for deal in deals:
        assert len(await order_created_ids(stack, deal)) == 1


async def test_concurrent_payments_and_refunds_keep_the_balance(stack, as_user) -> None:
    async with Api(as_user) as api:
        order = await api.won_order("1000.00")
        path = f"/orders/{order['id']}"
        first = await api.order.post(
            f"{path}/payments", json={"amount": usd("400.00"), "method": "bank_transfer"}
        )
        assert first.status_code == 201, first.text
        key = str(uuid.uuid4())
        payments = [
            api.order.post(
                f"{path}/payments",
                json={"amount": usd("25.00"), "method": "card", "reference": f"CARD-{n}"},
            )
            for n in range(12)
        ]
        retries = [
            api.order.post(
                f"{path}/payments",
                json={"amount": usd("100.00"), "method": "card", "reference": "ONCE"},
                headers={"Idempotency-Key": key},
            )
            for _ in range(4)
        ]
        refunds = [
            api.order.post(f"{path}/refunds", json={"amount": usd("10.00"), "reason": "dent"})
            for _ in range(6)
        ]
        answers = await asyncio.gather(*payments, *retries, *refunds)
        assert [a.status_code for a in answers] == [201] * 22, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers[12:16]}) == 1, "one key, one payment"
        overpaid = await api.order.post(
            f"{path}/payments", json={"amount": usd("1000.00"), "method": "card"}
        )
        assert overpaid.status_code == 422, overpaid.text
        ledger = (await api.order.get(f"{path}/ledger")).json()
    # 400 + 12 x 25 + 100 - 6 x 10 = 740 paid; 260 owed.
    assert (ledger["paid"], ledger["balance"], ledger["status"]) == (
        usd("740.00"),
        usd("260.00"),
        "partially_paid",
    )
    assert len(ledger["entries"]) == 1 + 12 + 1 + 6
    balances = [e["balance"]["amount"] for e in ledger["entries"]]
    assert balances[-1] == "260.00"


async def test_invoices_issued_at_once_are_numbered_without_gaps(stack, as_user) -> None:
    async with Api(as_user) as api:
        orders = await asyncio.gather(*(api.won_order("200.00") for _ in range(6)))
        ids = [o["id"] for o in orders]
        # Each order asked twice at once: one issue each, and the refused second ones
        # must not burn a number.
        answers = await asyncio.gather(
            *(
                api.order.post(f"/orders/{order}/invoices", json={"tax_rate": "10"})
                for order in ids + ids
            )
        )
    assert sorted(a.status_code for a in answers) == [201] * 6 + [409] * 6
    issued = [a.json() for a in answers if a.status_code == 201]
    assert sorted(i["order_id"] for i in issued) == sorted(ids)
    numbers = sorted(int(i["number"].rsplit("-", 1)[1]) for i in issued)
    assert numbers == list(range(numbers[0], numbers[0] + 6)), numbers
    assert {i["total"]["amount"] for i in issued} == {"220.00"}


async def test_the_invoice_pdf_holds_its_number_and_total(stack, as_user) -> None:
    async with Api(as_user) as api:
        order = await api.won_order("1234.50")
        issued = await api.order.post(f"/orders/{order['id']}/invoices", json={"tax_rate": "20"})
        assert issued.status_code == 201, issued.text
        invoice = issued.json()
        pdf = await api.order.get(
            f"/invoices/{invoice['id']}", headers={"Accept": "application/pdf"}
        )
        as_json = (await api.order.get(f"/invoices/{invoice['id']}")).json()
    assert pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert f"Invoice {invoice['number']}" in text
    assert "Total: 1,481.40 USD" in text
    assert as_json["total"] == usd("1481.40")
    assert as_json["buyer"]["name"] == "ACME Corp"


async def test_a_rep_of_another_team_finds_no_order_while_the_team_sees_it(stack, as_user) -> None:
    async with Api(as_user) as api:
        order = await api.won_order(team="emea")
        deal = order["opportunity_id"]
    outsider = as_user("order", "bob", roles=("rep",), teams=("apac",))
    manager = as_user("order", "mia", roles=("manager",), teams=("emea",))
    try:
        for path in (f"/orders/{order['id']}", f"/orders/{order['id']}/ledger"):
            refused = await outsider.get(path)
            assert refused.status_code == 404, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
        assert (await outsider.get(f"/opportunities/{deal}/orders")).json() == []
        listed = await outsider.get("/orders", params={"opportunity_id": deal})
        assert listed.json() == {"items": [], "next_cursor": None}
        paid = await outsider.post(
            f"/orders/{order['id']}/payments", json={"amount": usd("1.00"), "method": "card"}
        )
        assert paid.status_code == 404, paid.text

        async def seen_by_the_manager() -> bool:
            return (await manager.get(f"/orders/{order['id']}")).status_code == 200

        await eventually(seen_by_the_manager)
        assert [o["id"] for o in (await manager.get(f"/opportunities/{deal}/orders")).json()] == [
            order["id"]
        ]
    finally:
        await outsider.aclose()
        await manager.aclose()
