"""An invoice: the order's lines, their tax and totals, numbered gaplessly per year.

Tax is charged per rate: the lines are grouped by their rate (the line's own, else
the order's), each group's tax is its net sum times the rate, rounded to the currency's
minor unit once per group (half-even, as quote lines are), so the tax lines add up to
the tax total the customer sees. Amounts are exact Decimal throughout.

The number is not chosen here: the repository draws the next one of the year inside
the transaction that stores the invoice, so a failed issue never burns a number.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money, plain, round_to_minor_unit
from dealflow_common.contracts.order import OrderInvoiced
from dealflow_common.errors import RuleViolated
from dealflow_order.domain.model import Order

HUNDRED = Decimal(100)


def invoice_number(year: int, number_in_year: int) -> str:
    return f"INV-{year}-{number_in_year:06d}"


@dataclass(frozen=True, slots=True)
class Seller:
    """Who issues the invoice, as the customer must read it (from settings)."""

    name: str
    address: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Buyer:
    """Who is billed: the deal's customer as the order service last heard of it."""

    name: str
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaxRates:
    """Percent rates: one for the order, and per line number where a line differs."""

    order_rate: Decimal = Decimal(0)
    line_rates: Mapping[int, Decimal] = field(default_factory=dict)

    def for_line(self, line_no: int) -> Decimal:
        return self.line_rates.get(line_no, self.order_rate)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    line_no: int
    description: str
    quantity: Decimal
    unit_price: Money
    discount_percent: Decimal
    net: Money
    tax_rate: Decimal


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate: Decimal
    base: Money
    tax: Money


@dataclass(eq=False)
class Invoice:
    id: UUID
    order_id: UUID
    opportunity_id: UUID
    number: str
    year: int
    issued_at: datetime
    issued_by: str
    seller: Seller
    buyer: Buyer
    lines: list[InvoiceLine]
    tax_lines: list[TaxLine]
    subtotal: Money
    tax: Money
    total: Money
    events: list[EventPayload] = field(default_factory=list, repr=False)

    @property
    def currency(self) -> str:
        return self.total.currency


def check_rates(order: Order, rates: TaxRates) -> None:
    """Rates between 0 and 100 percent, for lines the order has."""
    known = {line.line_no for line in order.lines}
    if not 0 <= rates.order_rate <= HUNDRED:
        raise RuleViolated("tax_rate", "must be a percentage between 0 and 100")
    for index, (line_no, rate) in enumerate(rates.line_rates.items()):
        if line_no not in known:
            raise RuleViolated(
                f"line_tax_rates[{index}].line_no", f"the order has no line {line_no}"
            )
        if not 0 <= rate <= HUNDRED:
            raise RuleViolated(
                f"line_tax_rates[{index}].tax_rate", "must be a percentage between 0 and 100"
            )


def issue_invoice(
    order: Order,
    *,
    number_in_year: int,
    rates: TaxRates,
    seller: Seller,
    buyer: Buyer,
    by: str,
    now: datetime,
) -> Invoice:
    """The invoice of `order`, numbered `number_in_year` of `now`'s year; the order's
    amount due becomes the invoice's total. The caller checked `require_invoiceable`."""
    check_rates(order, rates)
    currency = order.currency
    lines = [
        InvoiceLine(
            line_no=line.line_no,
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            discount_percent=line.discount_percent,
            net=line.total,
            tax_rate=plain(rates.for_line(line.line_no)),
        )
        for line in order.lines
    ]
    bases: dict[Decimal, Decimal] = {}
    for line in lines:
        bases[line.tax_rate] = bases.get(line.tax_rate, Decimal(0)) + line.net.amount
    tax_lines = [
        TaxLine(
            rate=rate,
            base=Money(amount=base, currency=currency),
            tax=Money(
                amount=round_to_minor_unit(base * rate / HUNDRED, currency), currency=currency
            ),
        )
        for rate, base in sorted(bases.items())
    ]
    subtotal = sum((line.net.amount for line in lines), Decimal(0))
    tax = sum((t.tax.amount for t in tax_lines), Decimal(0))
    invoice = Invoice(
        id=uuid.uuid4(),
        order_id=order.id,
        opportunity_id=order.opportunity_id,
        number=invoice_number(now.year, number_in_year),
        year=now.year,
        issued_at=now,
        issued_by=by,
        seller=seller,
        buyer=buyer,
        lines=lines,
        tax_lines=tax_lines,
        subtotal=Money(amount=subtotal, currency=currency),
        tax=Money(amount=tax, currency=currency),
        total=Money(amount=subtotal + tax, currency=currency),
    )
    order.invoiced(invoice.id, invoice.total)
    invoice.events.append(
        OrderInvoiced(
            opportunity_id=order.opportunity_id,
            order_id=order.id,
            invoice_id=invoice.id,
            number=invoice.number,
            subtotal=invoice.subtotal,
            tax=invoice.tax,
            total=invoice.total,
            balance=order.balance,
            status=order.status,
            issued_by=by,
            issued_at=now,
        )
    )
    return invoice
