"""Exchange rates an admin maintains, and conversion into the reporting currency.

A rate says how many units of `to_currency` one unit of `from_currency` buys from its
effective date on, until a later rate of the same pair takes over. A pair is read in
either direction (EUR→USD 1.08 answers USD→EUR too, as 1/1.08), never through a third
currency: a figure converted through a chain nobody entered is a figure nobody can check.

Every figure of one report is converted at the rates effective on one day (`as_of`,
today by default), so that the same report asked twice gives the same totals, and a
deal's own currency and amount are never changed. A rate missing for a currency that a
report needs is an error naming the currency and the day, never a silent zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from dealflow_common.contracts.money import round_to_minor_unit
from dealflow_common.errors import RuleViolated


class MissingExchangeRate(RuleViolated):
    def __init__(self, from_currency: str, to_currency: str, on: date) -> None:
        super().__init__(
            "currency",
            f"no exchange rate from {from_currency} to {to_currency} is effective on "
            f"{on.isoformat()}; an admin sets one with PUT /exchange-rates",
        )
        self.from_currency = from_currency
        self.to_currency = to_currency
        self.on = on


class SameCurrencyRate(RuleViolated):
    def __init__(self, field: str, currency: str) -> None:
        super().__init__(field, f"a rate from {currency} to {currency} is always 1")


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    from_currency: str
    to_currency: str
    effective_from: date
    rate: Decimal


class RateBook:
    """The rates known, answering which one applies to a pair on a day."""

    def __init__(self, rates: Iterable[ExchangeRate]) -> None:
        self._by_pair: dict[tuple[str, str], list[ExchangeRate]] = defaultdict(list)
        for rate in rates:
            self._by_pair[(rate.from_currency, rate.to_currency)].append(rate)
        for entries in self._by_pair.values():
            entries.sort(key=lambda r: r.effective_from)

    def _effective(self, pair: tuple[str, str], on: date) -> ExchangeRate | None:
        found = None
        for rate in self._by_pair.get(pair, ()):
            if rate.effective_from > on:
                break
            found = rate
        return found

    def rate(self, from_currency: str, to_currency: str, on: date) -> Decimal:
        """Units of `to_currency` per unit of `from_currency` on `on`.

        The direct pair wins over the inverse one; when both exist, the one that took
        effect later is the admin's newer word."""
        if from_currency == to_currency:
            return Decimal(1)
        direct = self._effective((from_currency, to_currency), on)
        inverse = self._effective((to_currency, from_currency), on)
        if direct is not None and (
            inverse is None or direct.effective_from >= inverse.effective_from
        ):
            return direct.rate
        if inverse is not None:
            return Decimal(1) / inverse.rate
        raise MissingExchangeRate(from_currency, to_currency, on)


@dataclass(frozen=True, slots=True)
class Converter:
    """Converts amounts into one reporting currency at the rates of one day."""

    book: RateBook
    currency: str
    on: date

    def convert(self, amount: Decimal, currency: str) -> Decimal:
        """Exact (not rounded): sums are rounded once, at the end (`rounded`)."""
        if amount == 0:
            return Decimal(0)
        return amount * self.book.rate(currency, self.currency, self.on)

    def rounded(self, amount: Decimal) -> Decimal:
        return round_to_minor_unit(amount, self.currency)
