"""Request and response bodies of the quote service. Requests refuse unknown fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dealflow_common.contracts.money import CurrencyCode, Money
from dealflow_common.contracts.quote import BillingPeriod, QuoteStatus
from dealflow_common.http.fields import WHOLE_NUMBER, Text
from dealflow_quote.domain.lifecycle import QuoteAction

_DECIMAL = re.compile(r"^-?\d{1,12}(\.\d{1,6})?$")


def _exact_decimal(value: Any) -> Decimal:
    # Integers and decimal strings only: a JSON float is already inexact when it arrives.
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise PydanticCustomError("decimal_type", "must be an integer or a decimal string")
    text = str(value).strip()
    if not _DECIMAL.match(text):
        raise PydanticCustomError("decimal_format", 'must be a decimal number such as "2.5"')
    return Decimal(text)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("quantity_positive", "must be greater than zero")
    return value


def _percent(value: Decimal) -> Decimal:
    if not Decimal(0) <= value <= Decimal(100):
        raise PydanticCustomError("percent_range", "must be between 0 and 100 percent")
    return value


_decimal_json = PlainSerializer(lambda d: format(d, "f"), return_type=str)
Quantity = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    AfterValidator(_positive),
    _decimal_json,
    WithJsonSchema({"type": "string", "examples": ["2", "1.5"]}),
]
Percent = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    AfterValidator(_percent),
    _decimal_json,
    WithJsonSchema({"type": "string", "examples": ["15"]}),
]
LineText = Annotated[str, Text(2000)]
Reason = Annotated[str, Text(500)]
# No stripping: the pattern is what the schema states, on the value as sent.
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Name = Annotated[str, Text(200)]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Moment = Annotated[datetime, AfterValidator(_utc)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineRequest(_Request):
    """A catalog line (`product_id` or `bundle_id`) or a free-text line (description and
    unit_price). A catalog line takes the list price unless a special price is given."""

    quantity: Quantity
    product_id: UUID | None = None
    bundle_id: UUID | None = None
    description: LineText | None = None
    unit_price: Money | None = None
    discount_percent: Percent = Decimal(0)

    @model_validator(mode="after")
    def _one_kind_of_line(self) -> Self:
        if self.product_id and self.bundle_id:
            raise ValueError("a line quotes a product or a bundle, not both")
        if not self.product_id and not self.bundle_id:
            if self.description is None:
                # Not "missing": that would be answered as a plain "required", which reads
                # as a field the schema requires; this one only free-text lines need.
                raise PydanticCustomError("free_text_line", "a free-text line needs a description")
            if self.unit_price is None:
                raise PydanticCustomError("free_text_line", "a free-text line needs a unit_price")
        return self


Lines = Annotated[list[LineRequest], Field(min_length=1, max_length=200)]


class CreateQuoteRequest(_Request):
    opportunity_id: UUID
    lines: Lines
    currency: CurrencyCode | None = Field(
        default=None, description="Default: the currency of the first line"
    )
    valid_until: Moment | None = Field(default=None, description="Default: 30 days from now")


class ReviseQuoteRequest(_Request):
    lines: Lines | None = None
    valid_until: Moment | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if self.lines is None and self.valid_until is None:
            raise ValueError("send lines, valid_until, or both")
        return self


class ReasonRequest(_Request):
    reason: Reason


class LineResponse(BaseModel):
    line_no: int
    product_id: UUID | None
    bundle_id: UUID | None
    sku: str | None
    description: str
    quantity: Annotated[Decimal, _decimal_json]
    unit_price: Money
    discount_percent: Annotated[Decimal, _decimal_json]
    total: Money
    billing: Literal["one_off", "subscription"]
    billing_period: BillingPeriod | None


class QuoteResponse(BaseModel):
    id: UUID
    opportunity_id: UUID
    status: QuoteStatus
    currency: str
    lines: list[LineResponse]
    total: Money
    discount_percent: Annotated[Decimal, _decimal_json] = Field(
        description="Share of the list value the lines give away"
    )
    needs_approval: bool
    valid_until: datetime
    status_reason: str | None
    approved_by: str | None
    accepted_at: datetime | None
    allowed_actions: list[QuoteAction]
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int


class StuckAcceptanceResponse(BaseModel):
    """A quote whose acceptance awaits the opportunity's answer."""

    quote_id: UUID
    opportunity_id: UUID
    waiting_since: datetime = Field(description="When the customer accepted")
    waiting_seconds: int
    asked_again: int = Field(description="How many times the opportunity was asked again")
    answer_due_at: datetime = Field(
        description="When the quote asks again, or stops waiting after its last attempt"
    )
    requested_by: str
    via: Literal["api", "buy_now_link"]


class StuckAcceptancePage(BaseModel):
    items: list[StuckAcceptanceResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class BuyNowLinkResponse(BaseModel):
    url: str
    expires_at: datetime


class BuyNowQuoteResponse(BaseModel):
    """What the customer sees behind a buy-now link: the offer, not the internals."""

    quote_id: UUID
    status: QuoteStatus
    lines: list[LineResponse]
    total: Money
    valid_until: datetime


class ProductRequest(_Request):
    sku: Sku
    name: Name
    description: LineText | None = None
    list_price: Money
    billing: Literal["one_off", "subscription"] = "one_off"
    billing_period: BillingPeriod | None = None


class ProductChanges(_Request):
    sku: Sku = None  # type: ignore[assignment]
    name: Name = None  # type: ignore[assignment]
    description: LineText | None = None
    list_price: Money = None  # type: ignore[assignment]
    billing: Literal["one_off", "subscription"] = None  # type: ignore[assignment]
    billing_period: BillingPeriod | None = None


class ProductResponse(BaseModel):
    id: UUID
    sku: str
    name: str
    description: str | None
    list_price: Money
    billing: str
    billing_period: BillingPeriod | None
    retired_at: datetime | None
    version: int


class BundleItemBody(_Request):
    product_id: UUID
    quantity: Annotated[int, Field(ge=1, le=10_000, strict=True), WHOLE_NUMBER] = 1


class BundleRequest(_Request):
    sku: Sku
    name: Name
    description: LineText | None = None
    price: Money
    billing_period: BillingPeriod
    items: Annotated[list[BundleItemBody], Field(min_length=1, max_length=50)]


class BundleChanges(_Request):
    sku: Sku = None  # type: ignore[assignment]
    name: Name = None  # type: ignore[assignment]
    description: LineText | None = None
    price: Money = None  # type: ignore[assignment]
    items: Annotated[list[BundleItemBody], Field(min_length=1, max_length=50)] = None  # type: ignore[assignment]


class BundleResponse(BaseModel):
    id: UUID
    sku: str
    name: str
    description: str | None
    price: Money
    billing_period: BillingPeriod
    items: list[BundleItemBody]
    retired_at: datetime | None
    version: int
