"""The opportunity service's unit of work: one transaction with its repository."""

from __future__ import annotations

from typing import Self

from dealflow_common.uow import UnitOfWork
from dealflow_opportunity.adapters.follow_ups import DealTasks
from dealflow_opportunity.adapters.repository import OpportunityRepository


class OpportunityUnitOfWork(UnitOfWork):
    opportunities: OpportunityRepository
    tasks: DealTasks

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.opportunities = OpportunityRepository(self.connection)
        self.tasks = DealTasks(self.connection)
        return self
