"""The figures of the pipeline, the forecast and the analytics, from summed facts.

The database sums deals by currency (amounts in minor units, integers, so sums are exact
on every backend); this module turns those sums into figures in the reporting currency:
totals, weighted totals (value times probability), per-period forecasts against actuals,
win rates, averages and conversion rates. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from dealflow_common.contracts.money import minor_unit
from dealflow_common.contracts.opportunity import Stage
from dealflow_reporting.domain.periods import Granularity, Period
from dealflow_reporting.domain.rates import Converter

OPEN_STAGES: Final = (Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION)
FUNNEL: Final = (*OPEN_STAGES, Stage.CLOSED_WON)
"""The stages a deal goes through on its way to a win, in order (its rank is the index)."""
STAGE_RANK: Final = {stage: rank for rank, stage in enumerate(FUNNEL)}


def to_minor(amount: Decimal, currency: str) -> int:
    """An amount in the currency's smallest unit (cents): exact, as Money is rounded."""
    return int(amount.scaleb(minor_unit(currency)))


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-minor_unit(currency))


@dataclass(frozen=True, slots=True)
class CurrencySum:
    """What the database summed over some deals of one currency.

    `weighted_centi_minor` is Σ amount_minor times probability (a percentage), so the
    weighted value is that over 100, kept an integer until the very end."""

    currency: str
    deals: int
    amount_minor: int
    weighted_centi_minor: int = 0

    @property
    def amount(self) -> Decimal:
        return from_minor(self.amount_minor, self.currency)

    @property
    def weighted(self) -> Decimal:
        return from_minor(self.weighted_centi_minor, self.currency) / 100


@dataclass(frozen=True, slots=True)
class Totals:
    """Deals counted and their value and weighted value, in the reporting currency."""

    deals: int
    value: Decimal
    weighted: Decimal


def totals(sums: Iterable[CurrencySum], converter: Converter) -> Totals:
    """Converted per currency, summed exactly, rounded once to the reporting currency."""
    deals, value, weighted = 0, Decimal(0), Decimal(0)
    for s in sums:
        deals += s.deals
        value += converter.convert(s.amount, s.currency)
        weighted += converter.convert(s.weighted, s.currency)
    return Totals(deals, converter.rounded(value), converter.rounded(weighted))


# --- pipeline ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageFigures:
    stage: Stage
    totals: Totals


@dataclass(frozen=True, slots=True)
class Pipeline:
    stages: tuple[StageFigures, ...]
    total: Totals


def pipeline(by_stage: Mapping[Stage, Sequence[CurrencySum]], converter: Converter) -> Pipeline:
    """Every open stage in order, an empty one with zeros, and the whole pipeline."""
    stages = tuple(
        StageFigures(stage, totals(by_stage.get(stage, ()), converter)) for stage in OPEN_STAGES
    )
    return Pipeline(
        stages, totals([s for stage in OPEN_STAGES for s in by_stage.get(stage, ())], converter)
    )


# --- forecast ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonthSum:
    """Sums of one calendar month, for one group (an owner, a team, or everything)."""

    year: int
    month: int
    group: str | None
    sums: CurrencySum


@dataclass(frozen=True, slots=True)
class ForecastLine:
    period: Period
    group: str | None
    open: Totals
    won: Totals


def forecast(
    expected: Iterable[MonthSum],
    won: Iterable[MonthSum],
    granularity: Granularity,
    converter: Converter,
) -> list[ForecastLine]:
    """Open deals by the period of their expected close date (unweighted and weighted)
    against the value won by the period of the close, per group, in period order."""
    open_sums: dict[tuple[Period, str | None], list[CurrencySum]] = defaultdict(list)
    won_sums: dict[tuple[Period, str | None], list[CurrencySum]] = defaultdict(list)
    for target, rows in ((open_sums, expected), (won_sums, won)):
        for row in rows:
            period = Period.containing(row.year, row.month, granularity)
            target[(period, row.group)].append(row.sums)
    keys = sorted(set(open_sums) | set(won_sums), key=lambda k: (k[0], k[1] or ""))
    return [
        ForecastLine(
            period,
            group,
            totals(open_sums.get((period, group), ()), converter),
            totals(won_sums.get((period, group), ()), converter),
        )
        for period, group in keys
    ]


# --- analytics --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClosedDeals:
    """What the database counted of the deals closed in one group."""

    won: int
    lost: int
    won_sums: Sequence[CurrencySum] = ()
    won_cycle_days: float = 0.0
    """Σ of the won deals' days from creation to close."""
    reached: Mapping[Stage, int] = field(default_factory=dict)
    """Deals whose furthest stage is this one (not "or beyond")."""
    days_in_stage: Mapping[Stage, tuple[float, int]] = field(default_factory=dict)
    """Per stage left: Σ days spent in it, and how many stays that sums."""
    loss_reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StageConversion:
    stage: Stage
    reached: int
    advanced: int
    rate: float | None
    average_days: float | None


@dataclass(frozen=True, slots=True)
class Analytics:
    closed: int
    won: int
    lost: int
    win_rate: float | None
    won_value: Decimal
    average_deal_size: Decimal | None
    sales_cycle_days: float | None
    stages: tuple[StageConversion, ...]
    loss_reasons: tuple[tuple[str, int], ...]


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def analytics(closed: ClosedDeals, converter: Converter) -> Analytics:
    """Win rate = won / closed; average deal size = won value / won; sales cycle = mean
    days from creation to win; a stage's conversion = deals that went past it / deals
    that reached it; loss reasons most frequent first (ties by name)."""
    won_value = totals(closed.won_sums, converter).value
    average = converter.rounded(won_value / closed.won) if closed.won else None
    cycle = round(closed.won_cycle_days / closed.won, 2) if closed.won else None
    # Reached "this stage or beyond" from "furthest stage is exactly this one".
    reached_or_beyond: dict[Stage, int] = {}
    running = 0
    for stage in reversed(FUNNEL):
        running += closed.reached.get(stage, 0)
        reached_or_beyond[stage] = running
    stages = []
    for stage, following in zip(OPEN_STAGES, FUNNEL[1:], strict=True):
        reached, advanced = reached_or_beyond[stage], reached_or_beyond[following]
        days, stays = closed.days_in_stage.get(stage, (0.0, 0))
        stages.append(
            StageConversion(
                stage,
                reached,
                advanced,
                ratio(advanced, reached),
                round(days / stays, 2) if stays else None,
            )
        )
    reasons = tuple(sorted(closed.loss_reasons.items(), key=lambda item: (-item[1], item[0])))
    return Analytics(
        closed=closed.won + closed.lost,
        won=closed.won,
        lost=closed.lost,
        win_rate=ratio(closed.won, closed.won + closed.lost),
        won_value=won_value,
        average_deal_size=average,
        sales_cycle_days=cycle,
        stages=tuple(stages),
        loss_reasons=reasons,
    )
