"""The order service's unit of work: one transaction with its repositories."""

from __future__ import annotations

from typing import Self

from dealflow_common.uow import UnitOfWork
from dealflow_order.adapters.repository import KnownDeals, OrderRepository


class OrderUnitOfWork(UnitOfWork):
    orders: OrderRepository
    deals: KnownDeals

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.orders = OrderRepository(self.connection)
        self.deals = KnownDeals(self.connection)
        self.before_commit(self.deals.write_held)
        return self
