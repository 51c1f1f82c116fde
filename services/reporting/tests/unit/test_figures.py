"""The figures from summed facts: conversion, rounding, weighting, periods, analytics."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.errors import RuleViolated
from dealflow_reporting.domain.figures import (
    ClosedDeals,
    CurrencySum,
    MonthSum,
    analytics,
    forecast,
    pipeline,
    to_minor,
    totals,
)
from dealflow_reporting.domain.periods import Granularity, Period
from dealflow_reporting.domain.rates import (
    Converter,
    ExchangeRate,
    MissingExchangeRate,
    RateBook,
)

DAY = date(2026, 12, 1)
BOOK = RateBook(
    [
        ExchangeRate("EUR", "USD", date(2026, 1, 1), Decimal("1.10")),
        ExchangeRate("EUR", "USD", date(2026, 11, 1), Decimal("1.20")),
        ExchangeRate("USD", "JPY", date(2026, 1, 1), Decimal("150")),
    ]
)
IN_USD = Converter(BOOK, "USD", DAY)


def usd(minor: int, deals: int = 1, probability: int = 100) -> CurrencySum:
    return CurrencySum("USD", deals, minor, minor * probability)


def test_the_rate_effective_on_the_day_applies_not_a_later_or_earlier_one() -> None:
    assert BOOK.rate("EUR", "USD", date(2026, 10, 31)) == Decimal("1.10")
    assert BOOK.rate("EUR", "USD", date(2026, 11, 1)) == Decimal("1.20")
    with pytest.raises(MissingExchangeRate) as refused:
        BOOK.rate("EUR", "USD", date(2025, 12, 31))
    assert "EUR" in refused.value.detail
    assert "2025-12-31" in refused.value.detail


def test_a_pair_is_read_backwards_but_never_through_a_third_currency() -> None:
    assert BOOK.rate("JPY", "USD", DAY) == Decimal(1) / Decimal(150)
    with pytest.raises(MissingExchangeRate, match="EUR to JPY"):
        BOOK.rate("EUR", "JPY", DAY)


def test_weighted_value_is_value_times_probability_summed_exactly_then_rounded_once() -> None:
    # 3 deals of 0.01 USD at 50 %: each weighs 0.005, together 0.015 -> 0.02 (half even).
    sums = [CurrencySum("USD", 3, 3, 3 * 50)]
    figures = totals(sums, IN_USD)
    assert figures == totals(sums, IN_USD)
    assert (figures.deals, figures.value, figures.weighted) == (3, Decimal("0.03"), Decimal("0.02"))


def test_amounts_in_other_currencies_are_converted_at_the_days_rate() -> None:
    sums = [usd(100_00), CurrencySum("EUR", 2, 200_00, 200_00 * 25)]
    figures = totals(sums, IN_USD)
    assert figures.value == Decimal("340.00")  # 100 + 200 x 1.20
    assert figures.weighted == Decimal("160.00")  # 100 + 50 x 1.20


def test_a_currency_without_a_rate_is_an_error_not_a_zero() -> None:
    with pytest.raises(MissingExchangeRate):
        totals([CurrencySum("GBP", 1, 1_00, 1_00)], IN_USD)


def test_the_pipeline_lists_every_open_stage_in_order_even_empty_ones() -> None:
    figures = pipeline({Stage.PROPOSAL: [usd(500_00, probability=60)]}, IN_USD)
    assert [s.stage for s in figures.stages] == [
        Stage.LEAD,
        Stage.QUALIFICATION,
        Stage.PROPOSAL,
        Stage.NEGOTIATION,
    ]
    assert figures.stages[0].totals.deals == 0
    assert figures.stages[2].totals.weighted == Decimal("300.00")
    assert figures.total.value == Decimal("500.00")


def test_minor_units_follow_the_currency() -> None:
    assert to_minor(Decimal("12.34"), "USD") == 1234
    assert to_minor(Decimal("1234"), "JPY") == 1234
    assert to_minor(Decimal("1.234"), "BHD") == 1234


@pytest.mark.parametrize(
    ("text", "granularity", "first", "last"),
    [
        ("2026-Q1", Granularity.QUARTER, date(2026, 1, 1), date(2026, 3, 31)),
        ("2026-Q4", Granularity.QUARTER, date(2026, 10, 1), date(2026, 12, 31)),
        ("2024-02", Granularity.MONTH, date(2024, 2, 1), date(2024, 2, 29)),
    ],
)
def test_periods_parse_from_their_labels(
    text: str, granularity: Granularity, first: date, last: date
) -> None:
    period = Period.parse(text, granularity, "from")
    assert (period.first_day, period.last_day, period.label) == (first, last, text)


@pytest.mark.parametrize(
    ("text", "granularity"),
    [
        ("2026-Q5", Granularity.QUARTER),
        ("2026-13", Granularity.MONTH),
        ("2026-07", Granularity.QUARTER),
        ("Q1 2026", Granularity.QUARTER),
        ("", Granularity.MONTH),
    ],
)
def test_a_period_that_does_not_parse_is_refused_naming_the_field(
    text: str, granularity: Granularity
) -> None:
    with pytest.raises(RuleViolated) as refused:
        Period.parse(text, granularity, "to")
    assert refused.value.field == "to"


def test_forecast_folds_months_into_quarters_against_what_was_won_then() -> None:
    expected = [
        MonthSum(2026, 7, "emea", usd(100_00, probability=50)),
        MonthSum(2026, 9, "emea", usd(300_00, probability=10)),
        MonthSum(2026, 10, "emea", usd(50_00, probability=90)),
    ]
    won = [MonthSum(2026, 8, "emea", CurrencySum("EUR", 1, 100_00))]
    lines = forecast(expected, won, Granularity.QUARTER, IN_USD)
    assert [(line.period.label, line.group) for line in lines] == [
        ("2026-Q3", "emea"),
        ("2026-Q4", "emea"),
    ]
    q3 = lines[0]
    assert (q3.open.deals, q3.open.value, q3.open.weighted) == (
        2,
        Decimal("400.00"),
        Decimal("80.00"),
    )
    assert (q3.won.deals, q3.won.value) == (1, Decimal("120.00"))


def test_analytics_rates_averages_conversion_and_ranked_loss_reasons() -> None:
    closed = ClosedDeals(
        won=2,
        lost=3,
        won_sums=[usd(300_00, deals=2)],
        won_cycle_days=50.0,
        # furthest stage exactly: 2 lost in lead, 1 lost in proposal, 2 won
        reached={Stage.LEAD: 2, Stage.PROPOSAL: 1, Stage.CLOSED_WON: 2},
        days_in_stage={Stage.LEAD: (9.0, 3)},
        loss_reasons={"price": 1, "timing": 2},
    )
    figures = analytics(closed, IN_USD)
    assert (figures.closed, figures.win_rate) == (5, 0.4)
    assert figures.average_deal_size == Decimal("150.00")
    assert figures.sales_cycle_days == 25.0
    lead, qualification, proposal, negotiation = figures.stages
    assert (lead.reached, lead.advanced, lead.rate, lead.average_days) == (5, 3, 0.6, 3.0)
    assert (qualification.reached, qualification.advanced) == (3, 3)
    assert (proposal.reached, proposal.advanced, proposal.rate) == (3, 2, 0.6667)
    assert (negotiation.reached, negotiation.advanced, negotiation.rate) == (2, 2, 1.0)
    assert figures.loss_reasons == (("timing", 2), ("price", 1))


def test_analytics_of_nothing_closed_has_no_rates_rather_than_zeros() -> None:
    figures = analytics(ClosedDeals(won=0, lost=0), IN_USD)
    assert (figures.win_rate, figures.average_deal_size, figures.sales_cycle_days) == (
        None,
        None,
        None,
    )
