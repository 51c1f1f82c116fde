"""Order service persistence: orders with their lines, ledger and invoices, the invoice
counters, and the projection of deals' access keys.

Writes lock the order's row (`FOR UPDATE` on PostgreSQL; SQLite writers are serialised
by `BEGIN IMMEDIATE`) and save it versioned, so two payments on one order run one after
the other and each sees the balance the other left.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import and_, any_, bindparam, func, insert, select, true, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.money import Money, plain
from dealflow_common.contracts.order import OrderStatus
from dealflow_common.contracts.quote import BillingPeriod, QuoteLineData
from dealflow_common.db import is_postgres
from dealflow_common.deal_access import shares_from_document, shares_to_document
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.projection import AppliedSequences, HeldRows, ProjectionRows
from dealflow_common.versioned import VersionedTable
from dealflow_common.with_lines import InsertWithLines
from dealflow_order.adapters.tables import (
    invoice_counters,
    invoices,
    known_opportunities,
    ledger_entries,
    order_lines,
    orders,
)
from dealflow_order.domain.access import KnownDeal
from dealflow_order.domain.invoice import Buyer, Invoice, InvoiceLine, Seller, TaxLine
from dealflow_order.domain.model import EntryKind, LedgerEntry, Order, OrderNotFound

_SELECT_ORDER = select(orders).where(orders.c.id == bindparam("b_id"))
_SELECT_ORDER_FOR_UPDATE = _SELECT_ORDER.with_for_update()
_VERSIONED_ORDER = VersionedTable(orders, "order")
# A new order and its lines in one statement.
_INSERT_ORDER_WITH_LINES = InsertWithLines(orders, order_lines, "order_id")
_ORDER_OF_QUOTE = DirectStatement(
    select(orders.c.id).where(orders.c.quote_id == bindparam("b_quote"))
)
_QUOTES_WITH_ORDERS = DirectStatement(
    select(orders.c.quote_id).where(
        orders.c.quote_id
        == any_(bindparam("b_quotes", type_=postgresql.ARRAY(orders.c.quote_id.type)))
    )
)
_KNOWN = ProjectionRows(known_opportunities)
_SELECT_COUNTER = select(invoice_counters.c.last_number).where(
    invoice_counters.c.year == bindparam("b_year")
)
_UPDATE_COUNTER = (
    update(invoice_counters)
    .where(invoice_counters.c.year == bindparam("b_year"))
    .values(last_number=bindparam("b_number"))
)


class OrderRepository:
    """The write side, inside a unit of work."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._loaded: dict[UUID, int] = {}
        self._quotes_looked_up: dict[UUID, bool] = {}
        """Whether each quote looked up ahead has an order (`look_up_quotes`)."""

    async def look_up_quotes(self, quote_ids: Iterable[UUID]) -> None:
        """Find out at once which of a consumer's batch's quotes have an order:
        `exists_for_quote` then answers them without a statement each (PostgreSQL)."""
        wanted = set(quote_ids).difference(self._quotes_looked_up)
        if not wanted or not is_postgres(self._connection):
            return
        found = await _QUOTES_WITH_ORDERS.all(self._connection, {"b_quotes": list(wanted)})
        self._quotes_looked_up.update(dict.fromkeys(wanted, False))
        self._quotes_looked_up.update((row.quote_id, True) for row in found)

    async def exists_for_quote(self, quote_id: UUID) -> bool:
        looked_up = self._quotes_looked_up.get(quote_id)
        if looked_up is not None:
            return looked_up
        return await _ORDER_OF_QUOTE.first(self._connection, {"b_quote": quote_id}) is not None

    async def add(self, order: Order) -> None:
        lines = [
            {
                "line_no": line.line_no,
                "product_id": line.product_id,
                "bundle_id": line.bundle_id,
                "sku": line.sku,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price_amount": line.unit_price.amount,
                "discount_percent": line.discount_percent,
                "total_amount": line.total.amount,
                "billing": line.billing,
                "billing_period": line.billing_period.value if line.billing_period else None,
            }
            for line in order.lines
        ]
        await _INSERT_ORDER_WITH_LINES.add(self._connection, _order_row(order), lines)
        self._loaded[order.id] = order.version
        self._quotes_looked_up[order.quote_id] = True

    async def get(self, order_id: UUID) -> Order:
        """The order, its row locked until commit (the next change to it waits)."""
        query = _SELECT_ORDER_FOR_UPDATE if is_postgres(self._connection) else _SELECT_ORDER
        row = (await self._connection.execute(query, {"b_id": order_id})).first()
        if row is None:
            raise OrderNotFound(order_id)
        (order,) = await orders_with_lines(self._connection, [row])
        self._loaded[order.id] = order.version
        return order

    async def save(self, order: Order) -> None:
        loaded = self._loaded[order.id]
        if order.version == loaded:
            return
        changes = _order_row(order)
        del changes["id"]
        await _VERSIONED_ORDER.save(self._connection, order.id, loaded, changes)
        self._loaded[order.id] = order.version

    async def entry_for_key(self, order_id: UUID, key: str) -> tuple[LedgerEntry, str] | None:
        """The entry an earlier request with this Idempotency-Key made, with that
        request's fingerprint; None when the key is new for this order."""
        row = (
            await self._connection.execute(
                select(ledger_entries).where(
                    ledger_entries.c.order_id == order_id,
                    ledger_entries.c.idempotency_key == key,
                )
            )
        ).first()
        return None if row is None else (_to_entry(row), str(row.request_fingerprint))

    async def add_entry(
        self, entry: LedgerEntry, idempotency_key: str | None, fingerprint: str | None
    ) -> None:
        """Append to the order's ledger; the caller holds the order's row lock."""
        last = await self._connection.scalar(
            select(func.max(ledger_entries.c.entry_no)).where(
                ledger_entries.c.order_id == entry.order_id
            )
        )
        await self._connection.execute(
            insert(ledger_entries).values(
                id=entry.id,
                order_id=entry.order_id,
                entry_no=(last or 0) + 1,
                kind=entry.kind.value,
                amount=entry.amount.amount,
                currency=entry.amount.currency,
                method=entry.method,
                reference=entry.reference,
                reason=entry.reason,
                occurred_at=entry.occurred_at,
                recorded_by=entry.recorded_by,
                recorded_at=entry.recorded_at,
                paid_after=entry.paid_after.amount,
                balance_after=entry.balance_after.amount,
                status_after=entry.status_after.value,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint,
            )
        )

    async def next_invoice_number(self, year: int) -> int:
        """Draw the year's next number: the counter row stays locked until commit, so
        concurrent issues take turns, and a rollback gives the number back."""
        await self._connection.execute(
            _counter_insert_if_absent(self._connection.dialect.name),
            {"year": year, "last_number": 0},
        )
        query = (
            _SELECT_COUNTER.with_for_update() if is_postgres(self._connection) else _SELECT_COUNTER
        )
        last = int((await self._connection.execute(query, {"b_year": year})).scalar_one())
        await self._connection.execute(_UPDATE_COUNTER, {"b_year": year, "b_number": last + 1})
        return last + 1

    async def add_invoice(self, invoice: Invoice) -> None:
        await self._connection.execute(insert(invoices).values(**_invoice_row(invoice)))


class KnownDeals:
    """The projection of deals' access keys this service keeps from their events."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._held = HeldRows()

    async def lock_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock these deals' rows in one statement and hold them until `write_held`."""
        await _KNOWN.lock_ahead(self._connection, opportunity_ids, self._held)

    async def write_held(self) -> None:
        await _KNOWN.write_held(self._connection, self._held)

    async def lock_or_add(self, unseen: KnownDeal, now: datetime) -> KnownDeal:
        """The deal's row, locked until commit; `unseen` is added first when there is
        none (a concurrent insert of the same row waits, then does nothing)."""
        row = await _KNOWN.lock_or_add(self._connection, _known_row(unseen, now), self._held)
        return _to_known(row)

    async def save(self, deal: KnownDeal, now: datetime) -> None:
        await _KNOWN.save(self._connection, _known_row(deal, now), self._held)

    async def get(self, opportunity_id: UUID) -> KnownDeal:
        row = await _KNOWN.get(self._connection, opportunity_id, held=self._held)
        return KnownDeal.unseen(opportunity_id) if row is None else _to_known(row)


@dataclass(frozen=True, slots=True)
class OrderHead:
    """What a list needs to page and to decide visibility."""

    id: UUID
    opportunity_id: UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OrderFilter:
    opportunity_id: UUID | None = None
    customer_id: str | None = None
    status: OrderStatus | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None


class OrderQueries:
    """Reads for the API; they never lock and never change anything."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def find(self, order_id: UUID) -> Order | None:
        row = (await self._connection.execute(_SELECT_ORDER, {"b_id": order_id})).first()
        return None if row is None else (await orders_with_lines(self._connection, [row]))[0]

    async def deals(self, ids: Sequence[UUID]) -> dict[UUID, KnownDeal]:
        """The known deals among `ids`; one never heard of is `unseen`."""
        found = {
            r.id: _to_known(r)
            for r in await self._connection.execute(
                select(known_opportunities).where(known_opportunities.c.id.in_(set(ids)))
            )
        }
        return {i: found.get(i) or KnownDeal.unseen(i) for i in ids}

    async def page(
        self, where: OrderFilter, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[OrderHead]:
        """Newest first, up to `limit` orders after the cursor position: their heads only,
        so that those the caller may not see cost no more reading."""
        o = orders
        conditions: list[Any] = []
        if where.opportunity_id is not None:
            conditions.append(o.c.opportunity_id == where.opportunity_id)
        if where.customer_id is not None:
            conditions.append(
                o.c.opportunity_id.in_(
                    select(known_opportunities.c.id).where(
                        known_opportunities.c.customer_id == where.customer_id
                    )
                )
            )
        if where.status is not None:
            conditions.append(o.c.status == where.status.value)
        if where.created_from is not None:
            conditions.append(o.c.created_at >= where.created_from)
        if where.created_before is not None:
            conditions.append(o.c.created_at < where.created_before)
        if after is not None:
            conditions.append(tuple_(o.c.created_at, o.c.id) < tuple_(*after))
        query = (
            select(o.c.id, o.c.opportunity_id, o.c.created_at)
            .where(and_(true(), *conditions))
            .order_by(o.c.created_at.desc(), o.c.id.desc())
            .limit(limit)
        )
        rows = (await self._connection.execute(query)).all()
        return [OrderHead(r.id, r.opportunity_id, r.created_at) for r in rows]

    async def orders(self, heads: Sequence[OrderHead]) -> list[Order]:
        """The whole orders of `heads`, in their order."""
        if not heads:
            return []
        rows = (
            await self._connection.execute(
                select(orders).where(orders.c.id.in_([h.id for h in heads]))
            )
        ).all()
        by_id = {o.id: o for o in await orders_with_lines(self._connection, rows)}
        return [by_id[h.id] for h in heads if h.id in by_id]

    async def ledger(self, order_id: UUID) -> list[LedgerEntry]:
        rows = await self._connection.execute(
            select(ledger_entries)
            .where(ledger_entries.c.order_id == order_id)
            .order_by(ledger_entries.c.entry_no)
        )
        return [_to_entry(r) for r in rows]

    async def invoice(self, invoice_id: UUID) -> Invoice | None:
        row = (
            await self._connection.execute(select(invoices).where(invoices.c.id == invoice_id))
        ).first()
        return None if row is None else _to_invoice(row)


async def orders_with_lines(connection: AsyncConnection, rows: Sequence[Row[Any]]) -> list[Order]:
    lines: dict[UUID, list[QuoteLineData]] = {}
    if rows:
        currency = {r.id: r.currency for r in rows}
        found = await connection.execute(
            select(order_lines)
            .where(order_lines.c.order_id.in_(list(currency)))
            .order_by(order_lines.c.order_id, order_lines.c.line_no)
        )
        for r in found:
            money = currency[r.order_id]
            lines.setdefault(r.order_id, []).append(
                QuoteLineData(
                    line_no=r.line_no,
                    product_id=r.product_id,
                    bundle_id=r.bundle_id,
                    sku=r.sku,
                    description=r.description,
                    quantity=plain(r.quantity),
                    unit_price=Money(amount=r.unit_price_amount, currency=money),
                    discount_percent=plain(r.discount_percent),
                    total=Money(amount=r.total_amount, currency=money),
                    billing=r.billing,
                    billing_period=BillingPeriod(r.billing_period) if r.billing_period else None,
                )
            )
    return [_to_order(r, lines.get(r.id, [])) for r in rows]


def _to_order(r: Row[Any], lines: list[QuoteLineData]) -> Order:
    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=r.currency)

    return Order(
        id=r.id,
        opportunity_id=r.opportunity_id,
        quote_id=r.quote_id,
        status=OrderStatus(r.status),
        lines=lines,
        total=money(r.total_amount),
        created_at=r.created_at,
        version=r.version,
        paid=money(r.paid_amount),
        invoice_id=r.invoice_id,
        invoiced_total=None if r.invoiced_total_amount is None else money(r.invoiced_total_amount),
        cancelled_at=r.cancelled_at,
        cancelled_by=r.cancelled_by,
        cancel_reason=r.cancel_reason,
    )


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "opportunity_id": order.opportunity_id,
        "quote_id": order.quote_id,
        "status": order.status.value,
        "total_amount": order.total.amount,
        "currency": order.currency,
        "created_at": order.created_at,
        "version": order.version,
        "paid_amount": order.paid.amount,
        "invoice_id": order.invoice_id,
        "invoiced_total_amount": order.invoiced_total.amount if order.invoiced_total else None,
        "cancelled_at": order.cancelled_at,
        "cancelled_by": order.cancelled_by,
        "cancel_reason": order.cancel_reason,
    }


def _to_entry(r: Row[Any]) -> LedgerEntry:
    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=r.currency)

    return LedgerEntry(
        id=r.id,
        order_id=r.order_id,
        kind=EntryKind(r.kind),
        amount=money(r.amount),
        occurred_at=r.occurred_at,
        recorded_by=r.recorded_by,
        recorded_at=r.recorded_at,
        paid_after=money(r.paid_after),
        balance_after=money(r.balance_after),
        status_after=OrderStatus(r.status_after),
        method=r.method,
        reference=r.reference,
        reason=r.reason,
    )


def _invoice_row(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "order_id": invoice.order_id,
        "opportunity_id": invoice.opportunity_id,
        "number": invoice.number,
        "year": invoice.year,
        "issued_at": invoice.issued_at,
        "issued_by": invoice.issued_by,
        "currency": invoice.currency,
        "subtotal_amount": invoice.subtotal.amount,
        "tax_amount": invoice.tax.amount,
        "total_amount": invoice.total.amount,
        "seller": {
            "name": invoice.seller.name,
            "address": list(invoice.seller.address),
            "tax_id": invoice.seller.tax_id,
            "email": invoice.seller.email,
        },
        "buyer": {"name": invoice.buyer.name, "customer_id": invoice.buyer.customer_id},
        "lines": [
            {
                "line_no": line.line_no,
                "description": line.description,
                "quantity": str(line.quantity),
                "unit_price": str(line.unit_price.amount),
                "discount_percent": str(line.discount_percent),
                "net": str(line.net.amount),
                "tax_rate": str(line.tax_rate),
            }
            for line in invoice.lines
        ],
        "tax_lines": [
            {"rate": str(t.rate), "base": str(t.base.amount), "tax": str(t.tax.amount)}
            for t in invoice.tax_lines
        ],
    }


def _to_invoice(r: Row[Any]) -> Invoice:
    def money(amount: Decimal | str) -> Money:
        return Money(amount=Decimal(amount), currency=r.currency)

    return Invoice(
        id=r.id,
        order_id=r.order_id,
        opportunity_id=r.opportunity_id,
        number=r.number,
        year=r.year,
        issued_at=r.issued_at,
        issued_by=r.issued_by,
        seller=Seller(
            name=r.seller["name"],
            address=tuple(r.seller.get("address") or ()),
            tax_id=r.seller.get("tax_id"),
            email=r.seller.get("email"),
        ),
        buyer=Buyer(name=r.buyer["name"], customer_id=r.buyer.get("customer_id")),
        lines=[
            InvoiceLine(
                line_no=int(line["line_no"]),
                description=line["description"],
                quantity=Decimal(line["quantity"]),
                unit_price=money(line["unit_price"]),
                discount_percent=Decimal(line["discount_percent"]),
                net=money(line["net"]),
                tax_rate=Decimal(line["tax_rate"]),
            )
            for line in r.lines
        ],
        tax_lines=[
            TaxLine(rate=Decimal(t["rate"]), base=money(t["base"]), tax=money(t["tax"]))
            for t in r.tax_lines
        ],
        subtotal=money(r.subtotal_amount),
        tax=money(r.tax_amount),
        total=money(r.total_amount),
    )


def _to_known(row: Row[Any]) -> KnownDeal:
    return KnownDeal(
        id=row.id,
        owners=list(row.owners),
        team_id=row.team_id,
        created_by=row.created_by,
        customer_id=row.customer_id,
        customer_name=row.customer_name,
        shares=shares_from_document(row.shares),
        sequences=AppliedSequences.from_document(row.applied_sequences),
    )


def _known_row(deal: KnownDeal, now: datetime) -> dict[str, Any]:
    return {
        "id": deal.id,
        "owners": list(deal.owners),
        "team_id": deal.team_id,
        "created_by": deal.created_by,
        "customer_id": deal.customer_id,
        "customer_name": deal.customer_name,
        "shares": shares_to_document(deal.shares),
        "applied_sequences": deal.sequences.to_document(),
        "updated_at": now,
    }


@functools.cache
def _counter_insert_if_absent(dialect: str) -> Any:
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_(invoice_counters).on_conflict_do_nothing(
        index_elements=[invoice_counters.c.year]
    )
