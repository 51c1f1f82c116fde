"""Line totals, quote totals and the quote's discount, exact in Decimal."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from dealflow_common.contracts.money import Money
from dealflow_quote.domain.pricing import QuoteLine, discount_percent_of, total_of

LineOf = Callable[..., QuoteLine]


@pytest.mark.parametrize(
    ("quantity", "amount", "currency", "discount", "expected"),
    [
        pytest.param("3", "19.99", "USD", "0", "59.97", id="quantity-times-price"),
        pytest.param("2", "100.00", "USD", "12.5", "175.00", id="discount-taken-off"),
        pytest.param("1", "0.05", "USD", "50", "0.02", id="half-cent-tie-rounds-down-to-even"),
        pytest.param("1", "0.15", "USD", "50", "0.08", id="half-cent-tie-rounds-up-to-even"),
        pytest.param("1.5", "19.99", "USD", "0", "29.98", id="fractional-quantity-tie"),
        pytest.param("1.5", "0.01", "USD", "0", "0.02", id="fractional-quantity-up"),
        pytest.param("1", "0.10", "USD", "36", "0.06", id="below-half-rounds-down"),
        pytest.param("1", "125", "JPY", "10", "112", id="jpy-no-decimals-tie-down"),
        pytest.param("1", "135", "JPY", "10", "122", id="jpy-no-decimals-tie-up"),
        pytest.param("1", "1.235", "KWD", "50", "0.618", id="kwd-three-decimals-tie-up"),
        pytest.param("1", "1.225", "KWD", "50", "0.612", id="kwd-three-decimals-tie-down"),
        pytest.param("4", "250.00", "USD", "100", "0", id="full-discount-is-free"),
    ],
)
def test_line_total_is_quantity_times_price_less_discount_rounded_half_even(
    line: LineOf, quantity: str, amount: str, currency: str, discount: str, expected: str
) -> None:
    total = line(amount, quantity=quantity, currency=currency, discount=discount).total
    assert total == Money.of(expected, currency)
    assert total.amount == Decimal(expected)


@pytest.mark.parametrize(("currency", "exponent"), [("USD", -2), ("JPY", 0), ("KWD", -3)], ids=str)
def test_line_total_has_exactly_the_currency_minor_unit(
    line: LineOf, currency: str, exponent: int
) -> None:
    total = line("7", quantity="3", currency=currency, discount="100").total
    assert total.amount == 0
    assert total.amount.as_tuple().exponent == exponent


def test_quote_total_is_the_sum_of_the_rounded_lines(line: LineOf) -> None:
    # Each line is 0.015 before rounding, 0.02 after: the customer sees 3 x 0.02, and
    # the total must add up to that, not to round(0.045) = 0.04.
    lines = [line("0.01", quantity="1.5", line_no=n) for n in (1, 2, 3)]
    assert [ln.total.amount for ln in lines] == [Decimal("0.02")] * 3
    assert total_of(lines, "USD") == Money.of("0.06", "USD")


def test_quote_total_mixes_discounted_and_full_price_lines(line: LineOf) -> None:
    lines = [
        line("1200.00", quantity="2", discount="15", line_no=1),
        line("49.99", quantity="3", line_no=2),
        line("0.15", discount="50", line_no=3),
    ]
    # 2 x 1200 x 85% = 2040.00; 3 x 49.99 = 149.97; 0.15 x 50% = 0.075 -> 0.08
    assert total_of(lines, "USD") == Money.of("2190.05", "USD")


def test_an_empty_quote_totals_zero_in_its_currency() -> None:
    assert total_of([], "EUR") == Money.zero("EUR")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([("100.00", "1", "10")], "10.00", id="one-line"),
        pytest.param([("100.00", "1", "10"), ("100.00", "1", "0")], "5.00", id="weighted"),
        pytest.param([("200.00", "1", "0"), ("100.00", "1", "10")], "3.33", id="two-decimals"),
        pytest.param([("100.00", "2", "100")], "100.00", id="all-given-away"),
        pytest.param([("100.00", "1", "0")], "0.00", id="none-given-away"),
        pytest.param([("0.15", "1", "50")], "46.67", id="from-the-rounded-line-totals"),
    ],
)
def test_discount_is_the_share_of_list_value_given_away(
    line: LineOf, lines: list[tuple[str, str, str]], expected: str
) -> None:
    built = [
        line(amount, quantity=quantity, discount=discount, line_no=n)
        for n, (amount, quantity, discount) in enumerate(lines, start=1)
    ]
    percent = discount_percent_of(built)
    assert percent == Decimal(expected)
    assert percent.as_tuple().exponent == -2


def test_discount_of_an_empty_quote_is_zero() -> None:
    assert discount_percent_of([]) == 0


def test_discount_of_a_quote_with_no_list_value_is_zero(line: LineOf) -> None:
    assert discount_percent_of([line("0.00", quantity="5", discount="20")]) == 0
