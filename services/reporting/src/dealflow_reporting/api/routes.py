"""Reporting endpoints: thin adapters from the query string to `Reports`."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.money import plain
from dealflow_common.contracts.opportunity import LeadOrigin
from dealflow_common.http.problems import CHANGES, READS
from dealflow_common.http.security import Caller, requires
from dealflow_reporting.api.schemas import (
    AnalyticsGroupOut,
    AnalyticsOut,
    CustomerDealOut,
    ExchangeRateOut,
    ExchangeRatesIn,
    ForecastLineOut,
    ForecastOut,
    LossReasonOut,
    MoneyOut,
    PipelineOut,
    SnapshotOut,
    StageConversionOut,
    StageOut,
    TotalsOut,
    decimal_text,
)
from dealflow_reporting.application.reports import ReportBasis, Reports
from dealflow_reporting.domain.figures import ForecastLine, Totals, from_minor
from dealflow_reporting.domain.filters import DealFilter, GroupBy
from dealflow_reporting.domain.periods import Granularity
from dealflow_reporting.domain.rates import ExchangeRate

Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]


# A coroutine, though it awaits nothing: FastAPI runs a plain function in its thread
# pool, a thread hop per request, and only a coroutine's routes get a planned handler.
async def deal_filter(
    owner: Annotated[str | None, Query(max_length=200, description="Deals this user owns")] = None,
    team: Annotated[str | None, Query(max_length=100, description="Deals of this team")] = None,
    customer: Annotated[str | None, Query(max_length=100, description="A customer's id")] = None,
    lead_origin: Annotated[LeadOrigin | None, Query()] = None,
    expected_close_from: Annotated[date | None, Query(description="Inclusive")] = None,
    expected_close_to: Annotated[date | None, Query(description="Inclusive")] = None,
) -> DealFilter:
    return DealFilter(owner, team, customer, lead_origin, expected_close_from, expected_close_to)


Filter = Annotated[DealFilter, Depends(deal_filter)]
Currency = Annotated[
    str | None,
    Query(description="Reporting currency (ISO 4217); the service's setting when absent"),
]
AsOf = Annotated[
    date | None, Query(description="The day whose exchange rates apply (today when absent)")
]


def money(amount: Decimal, currency: str) -> MoneyOut:
    return MoneyOut(amount=decimal_text(amount), currency=currency)


def totals_out(totals: Totals, currency: str) -> TotalsOut:
    return TotalsOut(
        deals=totals.deals,
        value=money(totals.value, currency),
        weighted_value=money(totals.weighted, currency),
    )


def forecast_line(line: ForecastLine, by: GroupBy, currency: str) -> ForecastLineOut:
    return ForecastLineOut(
        period=line.period.label,
        owner=line.group if by == GroupBy.OWNER else None,
        team=line.group if by == GroupBy.TEAM else None,
        deals=line.open.deals,
        unweighted=money(line.open.value, currency),
        weighted=money(line.open.weighted, currency),
        won_deals=line.won.deals,
        won=money(line.won.value, currency),
    )


def reporting_routes(reports: Reports) -> APIRouter:
    router = APIRouter(tags=["reporting"])

    @router.get(
        "/pipeline",
        response_model=PipelineOut,
        responses=READS,
        summary="Open deals per stage: count, value and weighted value (value times probability)",
    )
    async def get_pipeline(
        caller: Caller, where: Filter, currency: Currency = None, as_of: AsOf = None
    ) -> PipelineOut:
        basis = reports.basis(currency, as_of)
        figures = await reports.pipeline(caller, where, basis)
        return PipelineOut(
            currency=basis.currency,
            as_of=basis.as_of,
            stages=[
                StageOut(stage=s.stage.value, **totals_out(s.totals, basis.currency).model_dump())
                for s in figures.stages
            ],
            total=totals_out(figures.total, basis.currency),
        )

    @router.get(
        "/forecast",
        response_model=ForecastOut,
        responses=READS,
        summary="Open deals by period of expected close (weighted and not) against won value",
    )
    async def get_forecast(
        caller: Caller,
        where: Filter,
        period: Granularity = Granularity.QUARTER,
        by: GroupBy = GroupBy.NONE,
        first: Annotated[
            str | None, Query(alias="from", description="First period, e.g. 2026-Q1 or 2026-01")
        ] = None,
        last: Annotated[
            str | None, Query(alias="to", description="Last period (inclusive)")
        ] = None,
        currency: Currency = None,
        as_of: AsOf = None,
    ) -> ForecastOut:
        basis = reports.basis(currency, as_of)
        lines = await reports.forecast(caller, where, period, by, first, last, basis)
        return ForecastOut(
            currency=basis.currency,
            as_of=basis.as_of,
            period=period.value,
            by=by.value,
            lines=[forecast_line(line, by, basis.currency) for line in lines],
        )

    @router.get(
        "/forecast/snapshots",
        response_model=list[SnapshotOut],
        responses=READS,
        summary="Forecasts taken on the schedule, newest first, with what was won since",
    )
    async def get_snapshots(
        caller: Caller,
        period: Granularity = Granularity.QUARTER,
        by: GroupBy = GroupBy.NONE,
        currency: Currency = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> list[SnapshotOut]:
        reports.basis(currency, None)  # an unknown currency is refused even with no snapshot
        found = await reports.past_forecasts(caller, period, by, currency, limit)
        return [
            SnapshotOut(
                id=s.id,
                taken_at=s.taken_at,
                currency=s.basis.currency,
                as_of=s.basis.as_of,
                lines=[forecast_line(line, by, s.basis.currency) for line in s.lines],
            )
            for s in found
        ]

    @router.get(
        "/analytics",
        response_model=AnalyticsOut,
        responses=READS,
        summary="Win rate, deal size, sales cycle, stage conversion and time, loss reasons",
    )
    async def get_analytics(
        caller: Caller,
        where: Filter,
        period: Annotated[
            Granularity | None, Query(description="Break down by period of the close")
        ] = None,
        by: GroupBy = GroupBy.NONE,
        first: Annotated[str | None, Query(alias="from")] = None,
        last: Annotated[str | None, Query(alias="to")] = None,
        currency: Currency = None,
        as_of: AsOf = None,
    ) -> AnalyticsOut:
        basis: ReportBasis = reports.basis(currency, as_of)
        groups = await reports.analytics(caller, where, period, by, first, last, basis)
        return AnalyticsOut(
            currency=basis.currency,
            as_of=basis.as_of,
            by=by.value,
            period=period.value if period else None,
            groups=[
                AnalyticsGroupOut(
                    period=g.period,
                    owner=g.group if by == GroupBy.OWNER else None,
                    team=g.group if by == GroupBy.TEAM else None,
                    closed=g.figures.closed,
                    won=g.figures.won,
                    lost=g.figures.lost,
                    win_rate=g.figures.win_rate,
                    won_value=money(g.figures.won_value, basis.currency),
                    average_deal_size=money(g.figures.average_deal_size, basis.currency)
                    if g.figures.average_deal_size is not None
                    else None,
                    sales_cycle_days=g.figures.sales_cycle_days,
                    stages=[
                        StageConversionOut(
                            stage=s.stage.value,
                            reached=s.reached,
                            advanced=s.advanced,
                            conversion_rate=s.rate,
                            average_days_in_stage=s.average_days,
                        )
                        for s in g.figures.stages
                    ],
                    loss_reasons=[
                        LossReasonOut(reason=reason, deals=count)
                        for reason, count in g.figures.loss_reasons
                    ],
                )
                for g in groups
            ],
        )

    @router.get(
        "/customers/{customer}/deals",
        response_model=list[CustomerDealOut],
        responses=READS,
        summary="A customer's history: every deal of theirs the caller may see, newest first",
    )
    async def get_customer_deals(caller: Caller, customer: str) -> list[CustomerDealOut]:
        rows = await reports.customer_deals(caller, customer)
        return [
            CustomerDealOut(
                id=r.opportunity_id,
                title=r.title,
                customer_id=r.customer_id,
                customer_name=r.customer_name,
                stage=r.stage,
                value=money(from_minor(r.amount_minor, r.currency), r.currency),
                probability=r.probability,
                expected_close_date=r.expected_close_date,
                owners=r.owners,
                team_id=r.team_id,
                created_at=r.created_at,
                closed_at=r.closed_at,
                outcome=r.outcome,
                lost_reason=r.lost_reason,
            )
            for r in rows
        ]

    return router


def exchange_rate_routes(reports: Reports) -> APIRouter:
    router = APIRouter(tags=["exchange rates"])

    @router.get(
        "/exchange-rates",
        response_model=list[ExchangeRateOut],
        responses=READS,
        summary="Every exchange rate, by pair and effective date (admins)",
    )
    async def get_rates(_: Admin) -> list[ExchangeRateOut]:
        return [
            ExchangeRateOut(
                from_currency=r.from_currency,
                to_currency=r.to_currency,
                effective_from=r.effective_from,
                rate=decimal_text(plain(r.rate)),
            )
            for r in await reports.exchange_rates()
        ]

    @router.put(
        "/exchange-rates",
        response_model=list[ExchangeRateOut],
        responses=CHANGES,
        summary="Set exchange rates from their effective dates (admins); all or none",
    )
    async def put_rates(caller: Admin, body: ExchangeRatesIn) -> list[ExchangeRateOut]:
        await reports.set_exchange_rates(
            [
                ExchangeRate(r.from_currency, r.to_currency, r.effective_from, r.rate)
                for r in body.rates
            ],
            caller.user_id,
        )
        return await get_rates(caller)

    return router
