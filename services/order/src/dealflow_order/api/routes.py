"""Order endpoints: thin adapters from HTTP to the use cases and queries.

An order, its ledger and its invoices are seen by whoever may see its deal (the one
rule, `dealflow_common.deal_access`); for anyone else they do not exist (404), and
lists leave them out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from dealflow_common.contracts.order import OrderStatus
from dealflow_common.http.idempotency import answered_again, idempotency_key_header
from dealflow_common.http.paging import decode_time_and_id, encode_time_and_id
from dealflow_common.http.problems import CHANGES, READS, invalid_field
from dealflow_common.http.security import Caller
from dealflow_common.idempotency import Idempotency
from dealflow_order.adapters.invoice_pdf import invoice_pdf
from dealflow_order.adapters.repository import OrderFilter
from dealflow_order.api.schemas import (
    CancelRequest,
    InvoiceRequest,
    InvoiceResponse,
    LedgerEntryResponse,
    LedgerResponse,
    OrderPage,
    OrderResponse,
    PaymentRequest,
    RefundRequest,
    entry_response,
    invoice_response,
    order_response,
)
from dealflow_order.application.queries import OrderReader
from dealflow_order.application.use_cases import Booked, OrderUseCases
from dealflow_order.domain.invoice import TaxRates

IdempotencyKey = Annotated[
    str | None,
    idempotency_key_header(
        "Makes a retried request record its payment or refund once: the same key with the "
        "same body is answered as the first time; with another body, 422"
    ),
]

_PDF = "application/pdf"


def _booked(booked: Booked, response: Response) -> LedgerEntryResponse:
    answered_again(response, booked.replayed)
    return entry_response(booked.entry)


def _after(cursor: str | None) -> tuple[datetime, UUID] | None:
    return decode_time_and_id(cursor) if cursor else None


def order_routes(reader: OrderReader, use_cases: OrderUseCases) -> APIRouter:
    router = APIRouter(tags=["orders"])

    @router.get("/orders", responses=READS, summary="Orders the caller may see, newest first")
    async def list_orders(
        caller: Caller,
        opportunity_id: UUID | None = None,
        customer: Annotated[str | None, Query(max_length=100, description="Customer id")] = None,
        status: OrderStatus | None = None,
        created_from: Annotated[datetime | None, Query(description="Inclusive")] = None,
        created_to: Annotated[datetime | None, Query(description="Exclusive")] = None,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> OrderPage:
        for name, moment in (("created_from", created_from), ("created_to", created_to)):
            if moment is not None and moment.tzinfo is None:
                raise invalid_field(name, "must carry a time zone (RFC 3339)")
        where = OrderFilter(
            opportunity_id=opportunity_id,
            customer_id=customer,
            status=status,
            created_from=created_from,
            created_before=created_to,
        )
        page = await reader.page(caller, where, _after(cursor), limit + 1)
        items = page[:limit]
        next_cursor = None
        if len(page) > limit:
            last = items[-1]
            next_cursor = encode_time_and_id(last.created_at, last.id)
        return OrderPage(items=[order_response(o) for o in items], next_cursor=next_cursor)

    @router.get(
        "/opportunities/{opportunity_id}/orders",
        responses=READS,
        summary="The orders of a deal (the Orders tab); empty when none the caller may see",
    )
    async def orders_of_opportunity(opportunity_id: UUID, caller: Caller) -> list[OrderResponse]:
        # A deal has one order per accepted quote, so one page holds them all.
        orders = await reader.page(caller, OrderFilter(opportunity_id=opportunity_id), None, 1000)
        return [order_response(o) for o in reversed(orders)]

    @router.get("/orders/{order_id}", responses=READS, summary="One order")
    async def get_order(order_id: UUID, caller: Caller) -> OrderResponse:
        return order_response(await reader.order(order_id, caller))

    @router.get(
        "/orders/{order_id}/ledger",
        responses=READS,
        summary="The order's payments and refunds, each with the running balance",
    )
    async def get_ledger(order_id: UUID, caller: Caller) -> LedgerResponse:
        order, entries = await reader.ledger(order_id, caller)
        return LedgerResponse(
            order_id=order.id,
            total=order.total,
            amount_due=order.amount_due,
            paid=order.paid,
            balance=order.balance,
            status=order.status,
            entries=[entry_response(e) for e in entries],
        )

    @router.post(
        "/orders/{order_id}/payments",
        status_code=201,
        responses=CHANGES,
        summary="Record a payment received for the order",
    )
    async def record_payment(
        order_id: UUID,
        body: PaymentRequest,
        caller: Caller,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> LedgerEntryResponse:
        booked = await use_cases.record_payment(
            order_id,
            caller,
            amount=body.amount,
            method=body.method.value,
            reference=body.reference,
            received_at=body.received_at,
            idempotency=Idempotency.of(idempotency_key, "payment", body),
        )
        return _booked(booked, response)

    @router.post(
        "/orders/{order_id}/refunds",
        status_code=201,
        responses=CHANGES,
        summary="Give back part or all of what was paid",
    )
    async def refund(
        order_id: UUID,
        body: RefundRequest,
        caller: Caller,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> LedgerEntryResponse:
        booked = await use_cases.refund(
            order_id,
            caller,
            amount=body.amount,
            reason=body.reason,
            idempotency=Idempotency.of(idempotency_key, "refund", body),
        )
        return _booked(booked, response)

    @router.post(
        "/orders/{order_id}/cancel",
        responses=CHANGES,
        summary="Cancel an order nothing was paid for, with the reason",
    )
    async def cancel(order_id: UUID, body: CancelRequest, caller: Caller) -> OrderResponse:
        return order_response(await use_cases.cancel(order_id, caller, reason=body.reason))

    @router.post(
        "/orders/{order_id}/invoices",
        status_code=201,
        responses=CHANGES,
        summary="Issue the order's invoice (numbered gaplessly per year)",
    )
    async def issue_invoice(
        order_id: UUID, caller: Caller, body: InvoiceRequest | None = None
    ) -> InvoiceResponse:
        body = body or InvoiceRequest()
        rates = TaxRates(
            order_rate=body.tax_rate,
            line_rates={r.line_no: r.tax_rate for r in body.line_tax_rates},
        )
        return invoice_response(await use_cases.issue_invoice(order_id, caller, rates=rates))

    @router.get(
        "/invoices/{invoice_id}",
        responses={
            **READS,
            200: {
                "description": "The invoice as JSON, or as a PDF with `Accept: application/pdf`",
                "content": {_PDF: {"schema": {"type": "string", "format": "binary"}}},
            },
        },
        summary="One invoice, as JSON or PDF",
        response_model=InvoiceResponse,
    )
    async def get_invoice(invoice_id: UUID, caller: Caller, request: Request) -> Response:
        invoice = await reader.invoice(invoice_id, caller)
        if _PDF in request.headers.get("accept", ""):
            return Response(
                invoice_pdf(invoice),
                media_type=_PDF,
                headers={"Content-Disposition": f'inline; filename="{invoice.number}.pdf"'},
            )
        return Response(
            invoice_response(invoice).model_dump_json().encode(), media_type="application/json"
        )

    return router
