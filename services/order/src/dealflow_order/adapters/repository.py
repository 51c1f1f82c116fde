"""Order persistence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.money import Money, plain
from dealflow_common.contracts.quote import BillingPeriod, QuoteLineData
from dealflow_order.adapters.tables import order_lines, orders
from dealflow_order.domain.model import Order


class OrderRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def exists_for_quote(self, quote_id: UUID) -> bool:
        found = await self._connection.scalar(
            select(orders.c.id).where(orders.c.quote_id == quote_id)
        )
        return found is not None

    async def add(self, order: Order) -> None:
        await self._connection.execute(
            insert(orders).values(
                id=order.id,
                opportunity_id=order.opportunity_id,
                quote_id=order.quote_id,
                status=order.status,
                total_amount=order.total.amount,
                currency=order.total.currency,
                created_at=order.created_at,
                version=order.version,
            )
        )
        await self._connection.execute(
            insert(order_lines),
            [
                {
                    "order_id": order.id,
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
            ],
        )

    async def find(self, order_id: UUID) -> Order | None:
        row = (
            await self._connection.execute(select(orders).where(orders.c.id == order_id))
        ).first()
        return (await self._with_lines([row]))[0] if row else None

    async def of_opportunity(self, opportunity_id: UUID) -> list[Order]:
        rows = (
            await self._connection.execute(
                select(orders)
                .where(orders.c.opportunity_id == opportunity_id)
                .order_by(orders.c.created_at)
            )
        ).all()
        return await self._with_lines(rows)

    async def _with_lines(self, rows: Sequence[Row[Any]]) -> list[Order]:
        lines: dict[UUID, list[QuoteLineData]] = {}
        if rows:
            currency = {r.id: r.currency for r in rows}
            found = await self._connection.execute(
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
                        billing_period=BillingPeriod(r.billing_period)
                        if r.billing_period
                        else None,
                    )
                )
        return [
            Order(
                id=r.id,
                opportunity_id=r.opportunity_id,
                quote_id=r.quote_id,
                status=r.status,
                lines=lines.get(r.id, []),
                total=Money(amount=r.total_amount, currency=r.currency),
                created_at=r.created_at,
                version=r.version,
            )
            for r in rows
        ]
