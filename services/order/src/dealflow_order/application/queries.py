"""Reads of orders, their ledgers and invoices, as the caller may see them.

An order whose deal the caller may not see does not exist for them (404), and a list
leaves it out without a trace (no count, no gap in the cursor): the one rule is
`dealflow_common.deal_access.can_view_deal`, applied to the projected access keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.db import reading
from dealflow_common.errors import NotFound
from dealflow_order.adapters.repository import OrderFilter, OrderHead, OrderQueries
from dealflow_order.domain.access import can_view
from dealflow_order.domain.invoice import Invoice
from dealflow_order.domain.model import LedgerEntry, Order, OrderNotFound


class InvoiceNotFound(NotFound):
    def __init__(self, invoice_id: UUID) -> None:
        super().__init__("invoice", invoice_id)


@dataclass(frozen=True, slots=True)
class OrderReader:
    engine: AsyncEngine
    scan: int = 200
    """How many orders a list reads at a time while it looks for visible ones."""

    @contextlib.asynccontextmanager
    async def _queries(self) -> AsyncIterator[OrderQueries]:
        async with reading(self.engine) as connection:
            yield OrderQueries(connection)

    async def _visible(self, queries: OrderQueries, order_id: UUID, caller: Principal) -> Order:
        order = await queries.find(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        deals = await queries.deals([order.opportunity_id])
        if not can_view(deals[order.opportunity_id], caller):
            raise OrderNotFound(order_id)
        return order

    async def order(self, order_id: UUID, caller: Principal) -> Order:
        async with self._queries() as queries:
            return await self._visible(queries, order_id, caller)

    async def ledger(self, order_id: UUID, caller: Principal) -> tuple[Order, list[LedgerEntry]]:
        async with self._queries() as queries:
            order = await self._visible(queries, order_id, caller)
            return order, await queries.ledger(order_id)

    async def invoice(self, invoice_id: UUID, caller: Principal) -> Invoice:
        async with self._queries() as queries:
            invoice = await queries.invoice(invoice_id)
            if invoice is None:
                raise InvoiceNotFound(invoice_id)
            deals = await queries.deals([invoice.opportunity_id])
            if not can_view(deals[invoice.opportunity_id], caller):
                raise InvoiceNotFound(invoice_id)
            return invoice

    async def page(
        self,
        caller: Principal,
        where: OrderFilter,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Order]:
        """Up to `limit` orders the caller may see, newest first, after the cursor.

        Visibility is decided per deal by the one rule, so the orders are read in
        slices and filtered until `limit` are found or none are left."""
        found: list[OrderHead] = []
        async with self._queries() as queries:
            while len(found) < limit:
                wanted = max(self.scan, limit - len(found))
                heads = await queries.page(where, after, wanted)
                deals = await queries.deals(list({h.opportunity_id for h in heads}))
                found.extend(h for h in heads if can_view(deals[h.opportunity_id], caller))
                if len(heads) < wanted:
                    break
                after = (heads[-1].created_at, heads[-1].id)
            return await queries.orders(found[:limit])
