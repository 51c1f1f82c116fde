"""Money is exact, in a real currency, never negative, and never a float on the wire."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from dealflow_common.contracts.money import Money, round_to_minor_unit


def test_amount_is_normalised_to_the_currency_minor_unit() -> None:
    assert Money.model_validate({"amount": "50000", "currency": "USD"}).model_dump() == {
        "amount": "50000.00",
        "currency": "USD",
    }
    assert Money.model_validate({"amount": "1500", "currency": "JPY"}).model_dump()["amount"] == (
        "1500"
    )
    assert Money.model_validate({"amount": "1.5", "currency": "KWD"}).model_dump()["amount"] == (
        "1.500"
    )


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("-5.00", "USD", "must not be negative"),
        ("abc", "USD", "decimal string"),
        ("1e5", "USD", "decimal string"),
        (12.5, "USD", "decimal string"),
        ("10.005", "USD", "more decimals than USD allows (2)"),
        ("1.5", "JPY", "more decimals than JPY allows (0)"),
        ("10", "XYZ", "unknown ISO 4217 currency code XYZ"),
        ("10", "usd", "three-letter ISO 4217 code"),
    ],
)
def test_bad_money_is_refused_with_a_reason(amount: object, currency: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Money.model_validate({"amount": amount, "currency": currency})
    assert message in str(refused.value)


def test_rounding_is_half_even_to_the_minor_unit() -> None:
    assert round_to_minor_unit(Decimal("2.345"), "USD") == Decimal("2.34")
    assert round_to_minor_unit(Decimal("2.355"), "USD") == Decimal("2.36")
    assert round_to_minor_unit(Decimal("2.5"), "JPY") == Decimal("2")


def test_trailing_zeros_are_not_extra_precision() -> None:
    assert Money.model_validate({"amount": "10.500000", "currency": "USD"}).amount == Decimal(
        "10.50"
    )
    assert str(Money(amount=Decimal("50000.000000"), currency="JPY").amount) == "50000"


def test_plain_numbers_drop_trailing_zeros_without_exponents() -> None:
    from dealflow_common.contracts.money import plain

    assert [str(plain(Decimal(v))) for v in ("100.000000", "2.500", "0.000000", "7")] == [
        "100",
        "2.5",
        "0",
        "7",
    ]


@pytest.mark.parametrize(
    "amount",
    [
        *("1000.00", "1000", "0", "0.5", "10.555", "1E+3", "999999999999999.99"),
        *("1000000000000000", "1.0000000", "-0", "-1", "NaN", "Infinity", "1.23456789", "0.001"),
    ],
)
@pytest.mark.parametrize("currency", ["USD", "JPY", "BHD", "XXQ"])
def test_exact_gives_what_validation_gives_and_refuses_what_it_refuses(
    amount: str, currency: str
) -> None:
    def built(make: object) -> object:
        try:
            money = make()  # type: ignore[operator]
        except ValidationError as refused:
            return refused.errors()[0]["type"]
        return money.model_dump(), money

    validated = built(lambda: Money(amount=Decimal(amount), currency=currency))
    fast = built(lambda: Money.exact(Decimal(amount), currency))
    assert fast == validated
    if isinstance(fast, tuple):
        assert hash(fast[1]) == hash(validated[1])  # type: ignore[index]
