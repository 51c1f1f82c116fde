"""The order's account and its state table, without I/O: every status x action."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.order import OrderStatus
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData
from dealflow_common.errors import Conflict, RuleViolated, TransitionNotAllowed
from dealflow_order.domain.invoice import Buyer, Seller, TaxRates, issue_invoice
from dealflow_order.domain.model import ALLOWED, Order, OrderAction, status_for

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def order(*totals: str) -> Order:
    lines = [
        QuoteLineData(
            line_no=n,
            product_id=None,
            bundle_id=None,
            sku=None,
            description=f"Item {n}",
            quantity=Decimal(1),
            unit_price=Money.of(t, "EUR"),
            discount_percent=Decimal(0),
            total=Money.of(t, "EUR"),
            billing="one_off",
            billing_period=None,
        )
        for n, t in enumerate(totals or ("100.00",), start=1)
    ]
    total = sum((item.total.amount for item in lines), Decimal(0))
    return Order.from_accepted_quote(
        QuoteAccepted(
            opportunity_id=uuid.uuid4(),
            quote_id=uuid.uuid4(),
            total=Money(amount=total, currency="EUR"),
            lines=lines,
            accepted_at=NOW,
        ),
        NOW,
    )


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def pay(o: Order, amount: str) -> None:
    o.record_payment(eur(amount), method="card", reference=None, received_at=NOW, by="a", now=NOW)


@pytest.mark.parametrize(
    ("paid", "due", "status"),
    [("0", "100", "open"), ("0.01", "100", "partially_paid"), ("100", "100", "paid")],
)
def test_the_status_follows_from_paid_and_due(paid: str, due: str, status: str) -> None:
    assert status_for(Decimal(paid), Decimal(due)) == status


def test_a_cancelled_order_allows_nothing_and_only_an_open_one_may_be_cancelled() -> None:
    assert ALLOWED[OrderStatus.CANCELLED] == frozenset()
    assert [s for s, actions in ALLOWED.items() if OrderAction.CANCEL in actions] == [
        OrderStatus.OPEN
    ]


def test_payments_and_refunds_move_the_account_exactly() -> None:
    o = order("0.10", "0.20")
    pay(o, "0.10")
    pay(o, "0.20")
    assert (o.status, o.balance) == (OrderStatus.PAID, eur("0"))
    entry = o.refund(eur("0.30"), reason="all back", by="a", now=NOW)
    assert (entry.balance_after, entry.status_after) == (eur("0.30"), OrderStatus.OPEN)
    assert [type(e).__name__ for e in o.events] == [
        "OrderCreated",
        "OrderPaymentRecorded",
        "OrderPaymentRecorded",
        "OrderRefunded",
    ]


def test_overpayment_and_refunds_beyond_the_paid_amount_name_the_amount() -> None:
    o = order("100.00")
    with pytest.raises(RuleViolated) as over:
        pay(o, "100.01")
    with pytest.raises(RuleViolated) as beyond:
        o.refund(eur("0.01"), reason="r", by="a", now=NOW)
    assert over.value.field == beyond.value.field == "amount.amount"


def test_a_paid_order_cannot_be_cancelled_and_a_cancelled_one_not_paid() -> None:
    paid = order()
    pay(paid, "1")
    with pytest.raises(TransitionNotAllowed):
        paid.cancel("r", by="a", now=NOW)
    cancelled = order()
    cancelled.cancel("r", by="a", now=NOW)
    with pytest.raises(TransitionNotAllowed):
        pay(cancelled, "1")
    with pytest.raises(TransitionNotAllowed):
        cancelled.require_invoiceable()


def test_an_invoice_makes_its_total_due_and_is_issued_once() -> None:
    o = order("100.00")
    pay(o, "100.00")
    invoice = issue_invoice(
        o,
        number_in_year=7,
        rates=TaxRates(order_rate=Decimal(19)),
        seller=Seller("Seller"),
        buyer=Buyer("Buyer"),
        by="a",
        now=NOW,
    )
    assert invoice.number == "INV-2026-000007"
    assert (o.amount_due, o.balance, o.status) == (
        eur("119.00"),
        eur("19.00"),
        OrderStatus.PARTIALLY_PAID,
    )
    with pytest.raises(Conflict):
        o.require_invoiceable()
