"""An accepted quote becomes exactly one order, seen by whoever may see its deal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    OpportunityAssigned,
    OpportunityShared,
    OpportunityUnshared,
    Share,
    ShareGrant,
)
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData
from dealflow_order.adapters.repository import OrderFilter
from dealflow_order.application.queries import OrderReader

from .conftest import ADMIN, MANAGER, OPERATOR, OTHER_TEAM_MANAGER, OTHER_TEAM_REP, line

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def accepted(opportunity_id: uuid.UUID, quote_id: uuid.UUID) -> QuoteAccepted:
    van = QuoteLineData(
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
        lines=[van],
        accepted_at=NOW,
    )


async def test_an_accepted_quote_becomes_one_order_with_its_lines(service) -> None:
    deal, quote = await service.deal(), uuid.uuid4()
    await service.consume(accepted(deal, quote))
    (order,) = (await service.call("GET", f"/opportunities/{deal}/orders")).json()
    assert (order["quote_id"], order["total"], order["status"]) == (
        str(quote),
        {"amount": "79800.00", "currency": "USD"},
        "open",
    )
    assert (order["paid"]["amount"], order["balance"]["amount"]) == ("0.00", "79800.00")
    assert order["lines"][0]["quantity"] == "2"
    assert order["lines"][0]["discount_percent"] == "5"
    created = (await service.envelopes_of(str(deal)))[-1]
    assert (created["type"], created["data"]["order_id"]) == ("order.created", order["id"])
    fetched = await service.call("GET", f"/orders/{order['id']}")
    assert fetched.json()["id"] == order["id"]


async def test_the_same_acceptance_twice_or_restated_still_makes_one_order(service) -> None:
    deal, quote, event_id = await service.deal(), uuid.uuid4(), uuid.uuid4()
    await service.consume(accepted(deal, quote), event_id=event_id)
    await service.consume(accepted(deal, quote), event_id=event_id)  # a redelivery
    await service.consume(accepted(deal, quote))  # a second event about the same quote
    page = (await service.call("GET", f"/orders?opportunity_id={deal}")).json()
    assert len(page["items"]) == 1
    assert [e for e, _ in await service.events_of(str(deal))] == ["order.created"]


async def test_a_batch_makes_one_order_per_quote_as_its_events_one_by_one(service, caplog) -> None:
    """A consumer's batch looks up at once which of its quotes have an order: a quote
    ordered before the batch, or by an earlier event of it, gets no second order."""
    deal = await service.deal()
    before, new = uuid.uuid4(), uuid.uuid4()
    await service.consume(accepted(deal, before))
    batch = [accepted(deal, new), accepted(deal, before), accepted(deal, new)]
    await service.consume_together(*batch)

    page = (await service.call("GET", f"/orders?opportunity_id={deal}")).json()
    assert sorted(order["quote_id"] for order in page["items"]) == sorted([str(before), str(new)])
    assert [e for e, _ in await service.events_of(str(deal))] == ["order.created"] * 2
    assert "applying one by one" not in caplog.text  # the batch applied whole


async def test_the_deals_owner_team_manager_and_admins_see_its_order(service) -> None:
    order = await service.order(await service.deal(owners=("alice",), team_id="emea"))
    for caller in ({}, MANAGER, ADMIN, OPERATOR):
        response = await service.call("GET", f"/orders/{order}", **caller)
        assert response.status_code == 200, (caller, response.text)


async def test_anyone_else_finds_no_such_order_anywhere(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea")
    order = await service.order(deal)
    invoice = (await service.call("POST", f"/orders/{order}/invoices", {})).json()["id"]
    for caller in (OTHER_TEAM_REP, OTHER_TEAM_MANAGER):
        for path in (f"/orders/{order}", f"/orders/{order}/ledger", f"/invoices/{invoice}"):
            response = await service.call("GET", path, **caller)
            assert response.status_code == 404, (caller, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        paid = await service.call(
            "POST",
            f"/orders/{order}/payments",
            {"amount": {"amount": "1.00", "currency": "USD"}, "method": "card"},
            **caller,
        )
        assert paid.status_code == 404, paid.text
        listed = await service.call("GET", f"/orders?opportunity_id={deal}", **caller)
        assert listed.json() == {"items": [], "next_cursor": None}
        tab = await service.call("GET", f"/opportunities/{deal}/orders", **caller)
        assert tab.json() == []


async def test_an_order_follows_its_deal_to_another_team(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea")
    order = await service.order(deal)
    await service.consume(
        OpportunityAssigned(
            opportunity_id=deal,
            action="team_assigned",
            user_id=None,
            owners=["carol"],
            team_id="apac",
            assigned_by="mia",
            assigned_at=datetime.now(UTC),
            version=2,
        )
    )
    assert (await service.call("GET", f"/orders/{order}", **OTHER_TEAM_REP)).status_code == 200
    assert (await service.call("GET", f"/orders/{order}", **MANAGER)).status_code == 404
    # alice created the deal: the rule lets its creator see it still.
    assert (await service.call("GET", f"/orders/{order}")).status_code == 200


async def test_a_share_lets_its_holder_see_the_order_and_only_an_edit_share_pay(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea")
    order = await service.order(deal)
    reader = {"user": "rita", "roles": ("rep",), "teams": ()}
    team_editor = {"user": "ed", "roles": ("rep",), "teams": ("partners",)}
    shares = [
        Share(kind="user", id="rita", grant=ShareGrant.READ),
        Share(kind="team", id="partners", grant=ShareGrant.EDIT),
    ]
    payment = {"amount": {"amount": "1.00", "currency": "USD"}, "method": "card"}
    for caller in (reader, team_editor):
        assert (await service.call("GET", f"/orders/{order}", **caller)).status_code == 404
    await service.consume(
        OpportunityShared(
            opportunity_id=deal,
            share=shares[1],
            shares=shares,
            shared_by="alice",
            shared_at=datetime.now(UTC),
            version=2,
        )
    )
    for caller in (reader, team_editor):
        assert (await service.call("GET", f"/orders/{order}", **caller)).status_code == 200
    before = await service.written()
    refused = await service.call("POST", f"/orders/{order}/payments", payment, **reader)
    assert refused.status_code == 403, refused.text
    assert await service.written() == before
    paid = await service.call("POST", f"/orders/{order}/payments", payment, **team_editor)
    assert paid.status_code == 201, paid.text
    await service.consume(
        OpportunityUnshared(
            opportunity_id=deal,
            share=shares[0],
            shares=shares[1:],
            unshared_by="alice",
            unshared_at=datetime.now(UTC),
            version=3,
        )
    )
    assert (await service.call("GET", f"/orders/{order}", **reader)).status_code == 404


async def test_an_order_of_a_deal_not_heard_of_yet_is_seen_by_admins_only(service) -> None:
    order = await service.order(uuid.uuid4())
    assert (await service.call("GET", f"/orders/{order}", **ADMIN)).status_code == 200
    assert (await service.call("GET", f"/orders/{order}", **MANAGER)).status_code == 404


async def test_the_list_filters_by_customer_status_and_date_and_pages(service) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    deal = await service.deal(customer_id=customer)
    made = [await service.order(deal, line(1, "100.00")) for _ in range(3)]
    cancelled = await service.call("POST", f"/orders/{made[0]}/cancel", {"reason": "duplicate"})
    assert cancelled.status_code == 200, cancelled.text

    async def listed(**params: str) -> dict:
        response = await service.http.get(
            "/orders",
            params={"customer": customer, **params},
            headers=service.headers("alice", ("rep",), ("emea",)),
        )
        assert response.status_code == 200, response.text
        return response.json()

    page = await listed(limit="2")
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    rest = await listed(limit="2", cursor=page["next_cursor"])
    assert rest["next_cursor"] is None
    assert sorted(o["id"] for o in page["items"] + rest["items"]) == sorted(made)
    assert [o["id"] for o in (await listed(status="cancelled"))["items"]] == [made[0]]
    assert (await listed(created_to="2000-01-01T00:00:00Z"))["items"] == []
    newest = page["items"][0]["created_at"]
    assert [o["id"] for o in (await listed(created_from=newest))["items"]] == [
        page["items"][0]["id"]
    ]


async def test_bad_list_parameters_are_refused_naming_them(service) -> None:
    for query, field in (
        ("status=lost", "status"),
        ("cursor=nonsense", "cursor"),
        ("created_from=2026-01-01T00:00:00", "created_from"),
        ("limit=0", "limit"),
    ):
        response = await service.call("GET", f"/orders?{query}")
        assert response.status_code == 422, (query, response.text)
        assert field in response.text, (query, response.text)


async def test_every_order_endpoint_needs_a_token(service) -> None:
    for method, path in (
        ("GET", "/orders"),
        ("GET", f"/orders/{uuid.uuid4()}"),
        ("POST", f"/orders/{uuid.uuid4()}/payments"),
        ("GET", f"/invoices/{uuid.uuid4()}"),
    ):
        assert (await service.http.request(method, path)).status_code == 401


async def test_a_list_pages_through_orders_it_may_not_show_without_leaving_a_gap(
    service,
) -> None:
    """Visibility is decided per deal after reading, a slice at a time: with slices of
    two, the visible orders hide among invisible ones across several slices."""
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    mine = await service.deal(owners=("alice",), team_id="emea", customer_id=customer)
    theirs = await service.deal(owners=("bob",), team_id="apac", customer_id=customer)
    made = [
        (deal, await service.order(deal, line(1, "10.00")))
        for deal in (theirs, theirs, mine, theirs, theirs, theirs, mine, theirs, mine)
    ]
    visible = [order for deal, order in reversed(made) if deal == mine]
    reader = OrderReader(service.engine, scan=2)
    alice = Principal(user_id="alice", roles=frozenset({Role.REP}), teams=frozenset({"emea"}))
    seen: list[str] = []
    after = None
    while True:
        page = await reader.page(alice, OrderFilter(customer_id=customer), after, 2)
        seen.extend(str(o.id) for o in page[:1])
        if len(page) < 2:
            break
        after = (page[0].created_at, page[0].id)
    assert seen == visible
