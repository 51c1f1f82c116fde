"""Request and response bodies of the order service. Requests refuse unknown fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
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
    field_validator,
)
from pydantic_core import PydanticCustomError

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.order import OrderStatus
from dealflow_common.contracts.quote import QuoteLineData
from dealflow_order.domain.invoice import Invoice
from dealflow_order.domain.model import EntryKind, LedgerEntry, Order

_RATE = re.compile(r"^\d{1,3}(\.\d{1,4})?$")


def _rate(value: Any) -> Decimal:
    # Integers and decimal strings only: a JSON float is already inexact when it arrives.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("rate_type", 'must be a decimal string such as "19" or "7.5"')
    text = str(value).strip()
    if not _RATE.match(text) or Decimal(text) > 100:
        raise PydanticCustomError(
            "rate_format", "must be a percentage from 0 to 100 with at most 4 decimals"
        )
    return Decimal(text)


Rate = Annotated[
    Decimal,
    BeforeValidator(_rate),
    PlainSerializer(lambda d: format(d, "f"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": _RATE.pattern, "examples": ["19", "7.5"]}),
]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise PydanticCustomError("timezone", "must carry a time zone (RFC 3339)")
    return value.astimezone(UTC)


Moment = Annotated[datetime, AfterValidator(_utc)]


class PaymentMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    CARD = "card"
    DIRECT_DEBIT = "direct_debit"
    CHECK = "check"
    CASH = "cash"
    OTHER = "other"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaymentRequest(_Request):
    amount: Money
    method: PaymentMethod
    reference: Reference | None = Field(
        default=None, description="The payment's reference at the payer's bank or processor"
    )
    received_at: Moment | None = Field(default=None, description="When received; now if absent")


class RefundRequest(_Request):
    amount: Money
    reason: Reason


class CancelRequest(_Request):
    reason: Reason


class LineTaxRate(_Request):
    line_no: int = Field(ge=1)
    tax_rate: Rate


class InvoiceRequest(_Request):
    tax_rate: Rate = Field(
        default=Decimal(0), description="Percent, for every line without its own rate"
    )
    line_tax_rates: list[LineTaxRate] = Field(default_factory=list, max_length=500)

    @field_validator("line_tax_rates")
    @classmethod
    def _one_rate_per_line(cls, value: list[LineTaxRate]) -> list[LineTaxRate]:
        numbers = [r.line_no for r in value]
        if len(numbers) != len(set(numbers)):
            raise PydanticCustomError("duplicate_line", "each line_no may be given one rate")
        return value


class OrderResponse(BaseModel):
    id: UUID
    opportunity_id: UUID
    quote_id: UUID
    status: OrderStatus
    lines: list[QuoteLineData]
    total: Money
    amount_due: Money = Field(description="The total until invoiced, the invoice's total after")
    paid: Money = Field(description="Received, net of refunds")
    balance: Money = Field(description="Still owed")
    invoice_id: UUID | None
    cancelled_at: datetime | None
    cancelled_by: str | None
    cancel_reason: str | None
    created_at: datetime
    version: int


class OrderPage(BaseModel):
    items: list[OrderResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class LedgerEntryResponse(BaseModel):
    id: UUID
    order_id: UUID
    kind: EntryKind
    amount: Money
    method: str | None
    reference: str | None
    reason: str | None
    occurred_at: datetime = Field(description="When the money was received or given back")
    recorded_by: str
    recorded_at: datetime
    paid: Money = Field(description="Received, net of refunds, after this entry")
    balance: Money = Field(description="Still owed after this entry (the running balance)")
    status: OrderStatus = Field(description="The order's status after this entry")


class LedgerResponse(BaseModel):
    order_id: UUID
    total: Money
    amount_due: Money
    paid: Money
    balance: Money
    status: OrderStatus
    entries: list[LedgerEntryResponse]


class PartyResponse(BaseModel):
    name: str
    address: list[str] = []
    tax_id: str | None = None
    email: str | None = None
    customer_id: str | None = None


class InvoiceLineResponse(BaseModel):
    line_no: int
    description: str
    quantity: str
    unit_price: Money
    discount_percent: str
    net: Money
    tax_rate: str


class TaxLineResponse(BaseModel):
    rate: str
    base: Money
    tax: Money


class InvoiceResponse(BaseModel):
    id: UUID
    number: str
    order_id: UUID
    opportunity_id: UUID
    issued_at: datetime
    issued_by: str
    seller: PartyResponse
    buyer: PartyResponse
    lines: list[InvoiceLineResponse]
    tax_lines: list[TaxLineResponse]
    subtotal: Money
    tax: Money
    total: Money


def order_response(order: Order) -> OrderResponse:
    return OrderResponse(
        id=order.id,
        opportunity_id=order.opportunity_id,
        quote_id=order.quote_id,
        status=order.status,
        lines=order.lines,
        total=order.total,
        amount_due=order.amount_due,
        paid=order.paid,
        balance=order.balance,
        invoice_id=order.invoice_id,
        cancelled_at=order.cancelled_at,
        cancelled_by=order.cancelled_by,
        cancel_reason=order.cancel_reason,
        created_at=order.created_at,
        version=order.version,
    )


def entry_response(entry: LedgerEntry) -> LedgerEntryResponse:
    return LedgerEntryResponse(
        id=entry.id,
        order_id=entry.order_id,
        kind=entry.kind,
        amount=entry.amount,
        method=entry.method,
        reference=entry.reference,
        reason=entry.reason,
        occurred_at=entry.occurred_at,
        recorded_by=entry.recorded_by,
        recorded_at=entry.recorded_at,
        paid=entry.paid_after,
        balance=entry.balance_after,
        status=entry.status_after,
    )


def invoice_response(invoice: Invoice) -> InvoiceResponse:
    return InvoiceResponse(
        id=invoice.id,
        number=invoice.number,
        order_id=invoice.order_id,
        opportunity_id=invoice.opportunity_id,
        issued_at=invoice.issued_at,
        issued_by=invoice.issued_by,
        seller=PartyResponse(
            name=invoice.seller.name,
            address=list(invoice.seller.address),
            tax_id=invoice.seller.tax_id,
            email=invoice.seller.email,
        ),
        buyer=PartyResponse(name=invoice.buyer.name, customer_id=invoice.buyer.customer_id),
        lines=[
            InvoiceLineResponse(
                line_no=line.line_no,
                description=line.description,
                quantity=format(line.quantity, "f"),
                unit_price=line.unit_price,
                discount_percent=format(line.discount_percent, "f"),
                net=line.net,
                tax_rate=format(line.tax_rate, "f"),
            )
            for line in invoice.lines
        ],
        tax_lines=[
            TaxLineResponse(rate=format(t.rate, "f"), base=t.base, tax=t.tax)
            for t in invoice.tax_lines
        ],
        subtotal=invoice.subtotal,
        tax=invoice.tax,
        total=invoice.total,
    )
