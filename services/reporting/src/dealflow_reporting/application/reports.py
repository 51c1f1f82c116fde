"""The reports a manager reads: pipeline, forecast against actuals, analytics, a
customer's history, past forecasts; and the exchange rates an admin maintains.

Each report is summed in the database over the deals the caller may see
(`can_view_deal`, as SQL) and converted into one reporting currency at the rates
effective on one day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.contracts.currencies import MINOR_UNITS
from dealflow_common.deal_access import can_view_deal
from dealflow_common.errors import RuleViolated
from dealflow_reporting.adapters.reports import (
    DealRow,
    ReportReader,
    save_exchange_rates,
    take_snapshot,
)
from dealflow_reporting.domain.figures import (
    Analytics,
    ForecastLine,
    MonthSum,
    Pipeline,
    analytics,
    forecast,
    pipeline,
)
from dealflow_reporting.domain.filters import DealFilter, GroupBy
from dealflow_reporting.domain.periods import Granularity, Period
from dealflow_reporting.domain.rates import Converter, ExchangeRate, RateBook, SameCurrencyRate

Clock = Callable[[], datetime]


class UnknownCurrency(RuleViolated):
    def __init__(self, field: str, code: str) -> None:
        super().__init__(field, f"unknown ISO 4217 currency code {code!r}")


def known_currency(code: str, field: str) -> str:
    if code not in MINOR_UNITS:
        raise UnknownCurrency(field, code)
    return code


@dataclass(frozen=True, slots=True)
class ReportBasis:
    """The reporting currency and the day whose rates convert every figure."""

    currency: str
    as_of: date


@dataclass(frozen=True, slots=True)
class AnalyticsGroup:
    period: str | None
    group: str | None
    figures: Analytics


@dataclass(frozen=True, slots=True)
class PastForecast:
    id: UUID
    taken_at: datetime
    basis: ReportBasis
    lines: list[ForecastLine]


def period_bounds(
    granularity: Granularity, first: str | None, last: str | None
) -> tuple[date | None, date | None]:
    """`from` and `to` period labels as inclusive days; a label that does not parse
    or that ends before it starts is refused, naming its field."""
    start = Period.parse(first, granularity, "from").first_day if first else None
    end = Period.parse(last, granularity, "to").last_day if last else None
    if start is not None and end is not None and end < start:
        raise RuleViolated("to", f"{last} is before from {first}")
    return start, end


class Reports:
    def __init__(
        self, engine: AsyncEngine, reader: ReportReader, clock: Clock, default_currency: str
    ) -> None:
        self._engine = engine
        self._reader = reader
        self._clock = clock
        self._default_currency = default_currency

    def basis(self, currency: str | None, as_of: date | None) -> ReportBasis:
        code = known_currency(currency, "currency") if currency else self._default_currency
        return ReportBasis(code, as_of or self._clock().date())

    async def _converter(self, basis: ReportBasis) -> Converter:
        return Converter(RateBook(await self._reader.exchange_rates()), basis.currency, basis.as_of)

    async def pipeline(
        self, principal: Principal, where: DealFilter, basis: ReportBasis
    ) -> Pipeline:
        sums = await self._reader.pipeline(principal, where)
        return pipeline(sums, await self._converter(basis))

    async def forecast(
        self,
        principal: Principal,
        where: DealFilter,
        granularity: Granularity,
        group_by: GroupBy,
        first: str | None,
        last: str | None,
        basis: ReportBasis,
    ) -> list[ForecastLine]:
        start, end = period_bounds(granularity, first, last)
        expected = await self._reader.expected_by_month(principal, where, group_by, start, end)
        won = await self._reader.won_by_month(principal, where, group_by, start, end)
        return forecast(expected, won, granularity, await self._converter(basis))

    async def analytics(
        self,
        principal: Principal,
        where: DealFilter,
        granularity: Granularity | None,
        group_by: GroupBy,
        first: str | None,
        last: str | None,
        basis: ReportBasis,
    ) -> list[AnalyticsGroup]:
        start, end = period_bounds(granularity or Granularity.MONTH, first, last)
        closed = await self._reader.closed_deals(
            principal, where, group_by, granularity, start, end
        )
        converter = await self._converter(basis)
        return [
            AnalyticsGroup(period, group, analytics(facts, converter))
            for (period, group), facts in sorted(
                closed.items(), key=lambda item: (item[0][0] or "", item[0][1] or "")
            )
        ]

    async def customer_deals(self, principal: Principal, customer_id: str) -> list[DealRow]:
        return [
            row
            for row in await self._reader.deals_of_customer(customer_id)
            if can_view_deal(
                principal,
                owners=row.owners,
                team_id=row.team_id,
                created_by=row.created_by,
                shares=row.shares,
            )
        ]

    async def past_forecasts(
        self,
        principal: Principal,
        granularity: Granularity,
        group_by: GroupBy,
        currency: str | None,
        limit: int,
    ) -> list[PastForecast]:
        """The latest snapshots, each at the rates of the day it was taken, with what
        was won since in each of its periods (the actual, as known now)."""
        snapshots = await self._reader.snapshots(limit)
        if not snapshots:
            return []
        won = await self._reader.won_by_month(principal, DealFilter(), group_by, None, None)
        rates = RateBook(await self._reader.exchange_rates())
        found = []
        for snapshot in snapshots:
            expected = [
                MonthSum(int(line.month[:4]), int(line.month[5:]), group, line.sums)
                for line in snapshot.lines
                for group in _visible_group(principal, group_by, line.dimension, line.group_key)
            ]
            basis = self.basis(currency, snapshot.taken_at.date())
            converter = Converter(rates, basis.currency, basis.as_of)
            periods = {Period.containing(m.year, m.month, granularity) for m in expected}
            lines = [
                line
                for line in forecast(expected, won, granularity, converter)
                if line.period in periods
            ]
            found.append(PastForecast(snapshot.id, snapshot.taken_at, basis, lines))
        return found

    async def take_snapshot(self, slot: str) -> UUID | None:
        async with self._engine.begin() as connection:
            return await take_snapshot(connection, slot, self._clock())

    async def exchange_rates(self) -> list[ExchangeRate]:
        return await self._reader.exchange_rates()

    async def set_exchange_rates(self, rates: Sequence[ExchangeRate], by: str) -> None:
        for number, rate in enumerate(rates):
            known_currency(rate.from_currency, f"rates[{number}].from_currency")
            known_currency(rate.to_currency, f"rates[{number}].to_currency")
            if rate.from_currency == rate.to_currency:
                raise SameCurrencyRate(f"rates[{number}].to_currency", rate.from_currency)
            if rate.rate <= 0:
                raise RuleViolated(f"rates[{number}].rate", "a rate must be greater than 0")
        async with self._engine.begin() as connection:
            await save_exchange_rates(connection, rates, by, self._clock())


def _visible_group(
    principal: Principal, group_by: GroupBy, dimension: str, key: str
) -> list[str | None]:
    """The groups a snapshot line counts in for this caller (none: not shown).

    Snapshots hold sums, not deals, so the rule is applied at their grain: all deals
    for admins and operators, a team's sums to its members, an owner's to that owner."""
    if principal.sees_everything:
        wanted = {GroupBy.NONE: "all", GroupBy.TEAM: "team", GroupBy.OWNER: "owner"}[group_by]
        if dimension != wanted:
            return []
        return [None if group_by == GroupBy.NONE else (key or None)]
    if group_by == GroupBy.OWNER:
        return [key] if dimension == "owner" and key == principal.user_id else []
    if dimension != "team" or key not in principal.teams:
        return []
    return [None if group_by == GroupBy.NONE else key]


def snapshot_slot(now: datetime, every_seconds: float) -> str:
    """The schedule slot `now` falls in (its start): one snapshot per slot, however many
    replicas run the schedule or however often a restart runs it again."""
    start = int(now.timestamp() // every_seconds * every_seconds)
    return datetime.fromtimestamp(start, tz=now.tzinfo).isoformat()
