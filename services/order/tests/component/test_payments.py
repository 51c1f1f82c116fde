"""Payments and refunds: the order's account and its ledger, exact to the cent, each
move once however often it is sent, and every bad request refused with nothing written."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from .conftest import OPERATOR, line


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


def payment(amount: str, **extra: Any) -> dict[str, Any]:
    return {"amount": usd(amount), "method": "bank_transfer", "reference": "BANK-1", **extra}


async def pay(service, order: str, amount: str, key: str | None = None, **extra: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    return await service.call(
        "POST", f"/orders/{order}/payments", payment(amount, **extra), headers=headers
    )


async def test_payments_make_the_order_partially_paid_then_paid(service) -> None:
    order = await service.order()
    first = await pay(service, order, "250.10")
    assert first.status_code == 201, first.text
    assert (first.json()["balance"], first.json()["status"]) == (usd("749.90"), "partially_paid")
    second = await pay(service, order, "749.90")
    assert (second.json()["balance"], second.json()["status"]) == (usd("0.00"), "paid")
    fetched = (await service.call("GET", f"/orders/{order}")).json()
    assert (fetched["status"], fetched["paid"], fetched["balance"]) == (
        "paid",
        usd("1000.00"),
        usd("0.00"),
    )
    deal = fetched["opportunity_id"]
    recorded = [e for e in await service.envelopes_of(deal) if e["type"] != "order.created"]
    assert [(e["type"], e["data"]["balance"]["amount"]) for e in recorded] == [
        ("order.payment_recorded", "749.90"),
        ("order.payment_recorded", "0.00"),
    ]


async def test_refunds_give_back_up_to_what_was_paid_and_the_ledger_keeps_the_balance(
    service,
) -> None:
    order = await service.order()
    await pay(service, order, "1000")
    refunded = await service.call(
        "POST", f"/orders/{order}/refunds", {"amount": usd("300.00"), "reason": "damaged"}
    )
    assert refunded.status_code == 201, refunded.text
    assert (refunded.json()["balance"], refunded.json()["status"]) == (
        usd("300.00"),
        "partially_paid",
    )
    await service.call(
        "POST", f"/orders/{order}/refunds", {"amount": usd("700.00"), "reason": "returned"}
    )
    ledger = (await service.call("GET", f"/orders/{order}/ledger")).json()
    assert [
        (e["kind"], e["amount"]["amount"], e["balance"]["amount"]) for e in ledger["entries"]
    ] == [
        ("payment", "1000.00", "0.00"),
        ("refund", "300.00", "300.00"),
        ("refund", "700.00", "1000.00"),
    ]
    assert (ledger["status"], ledger["paid"], ledger["balance"]) == (
        "open",
        usd("0.00"),
        usd("1000.00"),
    )
    deal = (await service.call("GET", f"/orders/{order}")).json()["opportunity_id"]
    assert [e for e, _ in await service.events_of(deal)][-2:] == ["order.refunded"] * 2


async def test_a_retried_payment_with_its_key_is_recorded_once(service) -> None:
    order = await service.order()
    key = str(uuid.uuid4())
    first = await pay(service, order, "100.00", key=key)
    before = await service.written()
    again = await pay(service, order, "100", key=key)  # the same amount, written otherwise
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await service.written() == before
    ledger = (await service.call("GET", f"/orders/{order}/ledger")).json()
    assert len(ledger["entries"]) == 1
    assert ledger["balance"] == usd("900.00")


BAD_REQUESTS = [
    ("overpayment", "payments", payment("1000.01"), 422, "amount.amount"),
    (
        "another currency",
        "payments",
        {**payment("1"), "amount": {"amount": "1", "currency": "EUR"}},
        422,
        "amount.currency",
    ),
    ("zero", "payments", payment("0"), 422, "amount.amount"),
    ("more decimals than the currency", "payments", payment("1.001"), 422, "amount"),
    (
        "a float amount",
        "payments",
        {**payment("1"), "amount": {"amount": 1.5, "currency": "USD"}},
        422,
        "amount.amount",
    ),
    ("unknown method", "payments", payment("1", method="barter"), 422, "method"),
    (
        "received without a time zone",
        "payments",
        payment("1", received_at="2026-01-01T10:00:00"),
        422,
        "received_at",
    ),
    ("an unknown field", "payments", payment("1", note="x"), 422, "note"),
    (
        "refund beyond what was paid",
        "refunds",
        {"amount": usd("10.01"), "reason": "r"},
        422,
        "amount.amount",
    ),
    ("refund without a reason", "refunds", {"amount": usd("1.00"), "reason": " "}, 422, "reason"),
    (
        "refund in another currency",
        "refunds",
        {"amount": {"amount": "1", "currency": "GBP"}, "reason": "r"},
        422,
        "amount.currency",
    ),
]


@pytest.mark.parametrize(
    ("kind", "body", "status", "field"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_a_bad_payment_or_refund_is_refused_naming_the_field(
    service, kind: str, body: dict[str, Any], status: int, field: str
) -> None:
    order = await service.order()
    await pay(service, order, "10.00")
    before = await service.written()
    response = await service.call(
        "POST", f"/orders/{order}/{kind}", body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    assert await service.written() == before


async def test_a_key_reused_for_another_request_is_refused_and_nothing_written(service) -> None:
    order = await service.order()
    key = str(uuid.uuid4())
    await pay(service, order, "100.00", key=key)
    before = await service.written()
    for body_path, body in (
        ("payments", payment("200.00")),
        ("refunds", {"amount": usd("100.00"), "reason": "same key, other request"}),
    ):
        response = await service.call(
            "POST", f"/orders/{order}/{body_path}", body, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await service.written() == before


async def test_an_unpaid_order_is_cancelled_with_its_reason_and_then_takes_nothing(
    service,
) -> None:
    order = await service.order()
    cancelled = await service.call(
        "POST", f"/orders/{order}/cancel", {"reason": "customer withdrew"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == (
        "cancelled",
        "customer withdrew",
    )
    deal = cancelled.json()["opportunity_id"]
    assert (await service.envelopes_of(deal))[-1]["type"] == "order.cancelled"
    before = await service.written()
    for path, body in (
        ("payments", payment("1.00")),
        ("invoices", {}),
        ("cancel", {"reason": "again"}),
    ):
        response = await service.call("POST", f"/orders/{order}/{path}", body)
        assert response.status_code == 409, response.text
        assert response.json()["state"] == "cancelled"
        assert response.json()["allowed"] == []
    assert await service.written() == before


async def test_an_order_with_money_received_cannot_be_cancelled(service) -> None:
    order = await service.order()
    await pay(service, order, "1000.00")
    before = await service.written()
    refused = await service.call("POST", f"/orders/{order}/cancel", {"reason": "changed mind"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["state"] == "paid"
    assert "refund" in refused.json()["detail"]
    assert await service.written() == before
    missing = await service.call("POST", f"/orders/{order}/cancel", {})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "reason"


async def test_operators_read_orders_but_do_not_book_money(service) -> None:
    order = await service.order()
    before = await service.written()
    response = await service.call("POST", f"/orders/{order}/payments", payment("1.00"), **OPERATOR)
    assert response.status_code == 403, response.text
    assert await service.written() == before


async def test_concurrent_payments_and_refunds_keep_the_balance_exact(service) -> None:
    order = await service.order(None, line(1, "600.00"), line(2, "400.00"))
    await pay(service, order, "500.00")
    # 10 payments of 30.00 and 10 refunds of 20.00 at once: every one fits the balance
    # and what was paid in any order, so all must be booked, and the balance end exact.
    answers = await asyncio.gather(
        *(pay(service, order, "30.00") for _ in range(10)),
        *(
            service.call(
                "POST", f"/orders/{order}/refunds", {"amount": usd("20.00"), "reason": "partial"}
            )
            for _ in range(10)
        ),
    )
    assert [a.status_code for a in answers] == [201] * 20, [
        a.text for a in answers if a.status_code != 201
    ]
    ledger = (await service.call("GET", f"/orders/{order}/ledger")).json()
    assert (ledger["paid"], ledger["balance"]) == (usd("600.00"), usd("400.00"))
    # The running balance of each entry follows from the one before it.
    balance = 1000_00
    for entry in ledger["entries"]:
        cents = int(entry["amount"]["amount"].replace(".", ""))
        balance += -cents if entry["kind"] == "payment" else cents
        assert int(entry["balance"]["amount"].replace(".", "")) == balance


async def test_concurrent_retries_of_one_payment_record_it_once(service) -> None:
    order = await service.order()
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(pay(service, order, "400.00", key=key) for _ in range(6)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    ledger = (await service.call("GET", f"/orders/{order}/ledger")).json()
    assert len(ledger["entries"]) == 1
    assert ledger["balance"] == usd("600.00")
