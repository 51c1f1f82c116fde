"""Quote lines and totals, exact in Decimal.

A line's total is quantity x unit price x (1 - discount), rounded half-even to the
currency's minor unit, as an invoice would print it; the quote's total is the sum of
its rounded lines, so the lines always add up to the total the customer sees. The
quote's discount is the share of the list value its lines give away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.money import Money, round_to_minor_unit
from dealflow_common.contracts.quote import BillingPeriod, QuoteLineData

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class QuoteLine:
    line_no: int
    description: str
    quantity: Decimal
    unit_price: Money
    discount_percent: Decimal = Decimal(0)
    product_id: UUID | None = None
    bundle_id: UUID | None = None
    sku: str | None = None
    billing: Literal["one_off", "subscription"] = "one_off"
    billing_period: BillingPeriod | None = None
    _total: Money | None = field(default=None, init=False, repr=False, compare=False)
    """`total`, once asked: a quote's response asks each line four or five times."""

    @property
    def currency(self) -> str:
        return self.unit_price.currency

    @property
    def list_value(self) -> Decimal:
        return round_to_minor_unit(self.quantity * self.unit_price.amount, self.currency)

    @property
    def total(self) -> Money:
        if self._total is None:
            net = self.quantity * self.unit_price.amount * (HUNDRED - self.discount_percent)
            rounded = round_to_minor_unit(net / HUNDRED, self.currency)
            object.__setattr__(self, "_total", Money.exact(rounded, self.currency))
        assert self._total is not None
        return self._total

    def data(self) -> QuoteLineData:
        return QuoteLineData(
            line_no=self.line_no,
            product_id=self.product_id,
            bundle_id=self.bundle_id,
            sku=self.sku,
            description=self.description,
            quantity=self.quantity,
            unit_price=self.unit_price,
            discount_percent=self.discount_percent,
            total=self.total,
            billing=self.billing,
            billing_period=self.billing_period,
        )


def total_of(lines: list[QuoteLine], currency: str) -> Money:
    return Money.exact(sum((line.total.amount for line in lines), Decimal(0)), currency)


def discount_percent_of(lines: list[QuoteLine]) -> Decimal:
    """The share of the list value the quote gives away, in percent (2 decimals)."""
    list_value = sum((line.list_value for line in lines), Decimal(0))
    if list_value == 0:
        return Decimal(0)
    given_away = list_value - sum((line.total.amount for line in lines), Decimal(0))
    return (given_away * HUNDRED / list_value).quantize(Decimal("0.01"))
