"""An accepted quote becomes exactly one order, whatever is delivered twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ()}


def accepted(opportunity_id: uuid.UUID, quote_id: uuid.UUID) -> QuoteAccepted:
    line = QuoteLineData(
        line_no=1,
        product_id=None,
        bundle_id=None,
        sku="VAN-1",
        description="Electric van",
        quantity=Decimal("2"),
        unit_price=Money.of("42000", "USD"),
        discount_percent=Decimal(5),
        total=Money.of("79800", "USD"),
        billing="one_off",
        billing_period=None,
    )
    return QuoteAccepted(
        opportunity_id=opportunity_id,
        quote_id=quote_id,
        total=Money.of("79800", "USD"),
        lines=[line],
        accepted_at=NOW,
    )


async def test_an_accepted_quote_becomes_one_order_with_its_lines(service) -> None:
    deal, quote = uuid.uuid4(), uuid.uuid4()
    await service.consume(accepted(deal, quote))
    (order,) = (await service.call("GET", f"/orders?opportunity_id={deal}", **MANAGER)).json()
    assert (order["quote_id"], order["total"], order["status"]) == (
        str(quote),
        {"amount": "79800.00", "currency": "USD"},
        "open",
    )
    assert order["lines"][0]["quantity"] == "2"
    assert order["lines"][0]["discount_percent"] == "5"
    created = (await service.envelopes_of(str(deal)))[-1]
    assert (created["type"], created["data"]["order_id"]) == ("order.created", order["id"])
    fetched = await service.call("GET", f"/orders/{order['id']}", **MANAGER)
    assert fetched.json()["id"] == order["id"]


async def test_the_same_acceptance_twice_or_restated_still_makes_one_order(service) -> None:
    deal, quote, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await service.consume(accepted(deal, quote), event_id=event_id)
    await service.consume(accepted(deal, quote), event_id=event_id)  # a redelivery
    await service.consume(accepted(deal, quote))  # a second event about the same quote
    orders = (await service.call("GET", f"/orders?opportunity_id={deal}", **MANAGER)).json()
    assert len(orders) == 1
    assert [e for e, _ in await service.events_of(str(deal))] == ["order.created"]


async def test_orders_are_read_by_managers_not_reps(service) -> None:
    response = await service.call("GET", f"/orders?opportunity_id={uuid.uuid4()}")
    assert response.status_code == 403
    assert (await service.call("GET", f"/orders/{uuid.uuid4()}", **MANAGER)).status_code == 404
