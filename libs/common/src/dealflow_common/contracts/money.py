"""Money: an exact decimal amount in an ISO 4217 currency, never a float.

On the wire the amount is a decimal string (`{"amount": "50000.00", "currency": "USD"}`)
with at most as many decimals as the currency's minor unit, and it is never negative:
discounts, refunds and credits are their own fields, not negative money.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dealflow_common.contracts.currencies import MINOR_UNITS
from dealflow_common.contracts.trusted import trusted

_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,6})?$")
_TOO_LARGE = Decimal(10) ** 15
"""The first amount `_AMOUNT` refuses for its integer digits."""
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _parse_amount(value: Any) -> Decimal:
    # Strings only: a JSON number is parsed as a binary float before we see it, so it
    # may already be inexact; refusing it keeps every amount exactly what was sent.
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise PydanticCustomError(
            "money_amount_type", 'amount must be a decimal string such as "1250.00"'
        )
    if text.startswith("-"):
        raise PydanticCustomError("money_amount_negative", "amount must not be negative")
    if not _AMOUNT.match(text):
        raise PydanticCustomError(
            "money_amount_format",
            "amount must be a decimal string of digits with an optional fraction, "
            'such as "1250.00"',
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise PydanticCustomError("money_amount_format", "amount is not a number") from None


def _parse_currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise PydanticCustomError(
            "currency_format", "currency must be a three-letter ISO 4217 code such as USD"
        )
    if value not in MINOR_UNITS:
        raise PydanticCustomError(
            "currency_unknown", "unknown ISO 4217 currency code {code}", {"code": value}
        )
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    PlainSerializer(lambda d: format(d, "f"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": _AMOUNT.pattern, "examples": ["50000.00"]}),
]
CurrencyCode = Annotated[
    str,
    BeforeValidator(_parse_currency),
    WithJsonSchema({"type": "string", "pattern": _CURRENCY.pattern, "examples": ["USD"]}),
]


def minor_unit(currency: str) -> int:
    return MINOR_UNITS[currency]


def plain(value: Decimal) -> Decimal:
    """The same number without trailing zeros and never in exponent form (2.500 -> 2.5)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


_SMALLEST_UNIT = {code: Decimal(1).scaleb(-places) for code, places in MINOR_UNITS.items()}
"""Each currency's smallest unit as a Decimal (0.01 for USD): made once, not at each of
the dozens of roundings a quote's response does."""


def round_to_minor_unit(amount: Decimal, currency: str) -> Decimal:
    """Round half-even (banker's rounding) to the currency's smallest unit."""
    return amount.quantize(_SMALLEST_UNIT[currency], rounding=ROUND_HALF_EVEN)


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Amount
    currency: CurrencyCode

    @model_validator(mode="after")
    def _fits_the_minor_unit(self) -> Self:
        # Trailing zeros are not precision: "10.500" USD is exactly 10.50.
        exponent = self.amount.normalize().as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if places > MINOR_UNITS[self.currency]:
            raise PydanticCustomError(
                "money_amount_precision",
                "amount {amount} has more decimals than {currency} allows ({places})",
                {
                    "amount": format(self.amount, "f"),
                    "currency": self.currency,
                    "places": MINOR_UNITS[self.currency],
                },
            )
        # Normalise the scale so "50000" and "50000.00" are the same value on the wire.
        object.__setattr__(self, "amount", round_to_minor_unit(self.amount, self.currency))
        return self

    @classmethod
    def exact(cls, amount: Decimal, currency: str) -> Money:
        """The same Money as `Money(amount=amount, currency=currency)`, built without
        validating again when there is nothing to refuse: for a Decimal read back from
        the database or computed from other Money (a line total), which a quote's
        response builds a dozen times. Validation costs about 8 µs a time, and on the
        deal path it used to be a tenth of the quote service's CPU. What validation would
        refuse (negative, too many digits or decimals, an unknown currency) goes through
        it, and is refused the same way."""
        if (
            currency in MINOR_UNITS
            and amount.is_finite()
            and not amount.is_signed()
            and amount < _TOO_LARGE
            and amount.as_tuple().exponent >= -6  # type: ignore[operator]
        ):
            rounded = round_to_minor_unit(amount, currency)
            if rounded == amount:  # no decimal the currency does not have
                return trusted(cls, {"amount": rounded, "currency": currency})
        return cls(amount=amount, currency=currency)

    @classmethod
    def of(cls, amount: Decimal | str, currency: str) -> Money:
        return cls(amount=Decimal(amount), currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal(0), currency=currency)
