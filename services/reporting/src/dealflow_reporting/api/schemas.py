"""Request and response bodies of the reporting API."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dealflow_common.contracts.money import Amount, CurrencyCode


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoneyOut(BaseModel):
    amount: str = Field(examples=["50000.00"])
    currency: str = Field(examples=["USD"])


class TotalsOut(BaseModel):
    deals: int
    value: MoneyOut
    weighted_value: MoneyOut


class StageOut(TotalsOut):
    stage: str


class PipelineOut(BaseModel):
    currency: str
    as_of: date = Field(description="The day whose exchange rates convert every figure")
    stages: list[StageOut]
    total: TotalsOut


class ForecastLineOut(BaseModel):
    period: str = Field(examples=["2026-Q3"])
    owner: str | None = None
    team: str | None = None
    deals: int = Field(description="Open deals expected to close in the period")
    unweighted: MoneyOut
    weighted: MoneyOut
    won_deals: int
    won: MoneyOut = Field(description="Value won in the period (the actual)")


class ForecastOut(BaseModel):
    currency: str
    as_of: date
    period: str
    by: str
    lines: list[ForecastLineOut]


class SnapshotOut(BaseModel):
    id: UUID
    taken_at: datetime
    currency: str
    as_of: date = Field(description="The snapshot's day: its rates convert its figures")
    lines: list[ForecastLineOut]


class StageConversionOut(BaseModel):
    stage: str
    reached: int
    advanced: int
    conversion_rate: float | None
    average_days_in_stage: float | None


class LossReasonOut(BaseModel):
    reason: str
    deals: int


class AnalyticsGroupOut(BaseModel):
    period: str | None = None
    owner: str | None = None
    team: str | None = None
    closed: int
    won: int
    lost: int
    win_rate: float | None
    won_value: MoneyOut
    average_deal_size: MoneyOut | None
    sales_cycle_days: float | None
    stages: list[StageConversionOut]
    loss_reasons: list[LossReasonOut]


class AnalyticsOut(BaseModel):
    currency: str
    as_of: date
    by: str
    period: str | None
    groups: list[AnalyticsGroupOut]


class CustomerDealOut(BaseModel):
    id: UUID
    title: str
    customer_id: str
    customer_name: str
    stage: str
    value: MoneyOut = Field(description="In the deal's own currency, never converted")
    probability: int
    expected_close_date: date | None
    owners: list[str]
    team_id: str | None
    created_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    lost_reason: str | None


class ExchangeRateIn(_Body):
    from_currency: CurrencyCode
    to_currency: CurrencyCode
    effective_from: date
    rate: Amount = Field(description="Units of to_currency for one from_currency, > 0")


class ExchangeRatesIn(_Body):
    rates: list[ExchangeRateIn] = Field(min_length=1, max_length=1000)


class ExchangeRateOut(BaseModel):
    from_currency: str
    to_currency: str
    effective_from: date
    rate: str


def decimal_text(value: Decimal) -> str:
    return format(value, "f")
