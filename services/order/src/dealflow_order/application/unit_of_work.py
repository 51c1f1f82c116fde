"""The order service's unit of work."""

from __future__ import annotations

from typing import Self

from dealflow_common.uow import UnitOfWork
from dealflow_order.adapters.repository import OrderRepository


class OrderUnitOfWork(UnitOfWork):
    orders: OrderRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.orders = OrderRepository(self.connection)
        return self
