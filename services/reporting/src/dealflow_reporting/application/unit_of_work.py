"""The reporting service's unit of work: one transaction over the read model."""

from __future__ import annotations

from typing import Self

from dealflow_common.last_write import LastWrite
from dealflow_common.uow import UnitOfWork
from dealflow_reporting.adapters.store import DealStore


class ReportingUnitOfWork(UnitOfWork):
    deals: DealStore

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.deals = DealStore(self.connection)
        return self

    async def commit(self, last: LastWrite | None = None) -> None:
        await self.deals.write_held()
        await super().commit(last)
