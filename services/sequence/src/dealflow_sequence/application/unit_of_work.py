"""The sequence service's unit of work: one transaction with its repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.messaging.outbox import Outbox
from dealflow_common.uow import UnitOfWork
from dealflow_sequence.adapters.repository import (
    DefinitionCache,
    EnrollmentRepository,
    KnownDeals,
    SequenceRepository,
    TaskRepository,
)


class SequenceUnitOfWork(UnitOfWork):
    sequences: SequenceRepository
    enrollments: EnrollmentRepository
    tasks: TaskRepository
    deals: KnownDeals

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        clock: Callable[[], datetime],
        definitions: DefinitionCache,
    ) -> None:
        super().__init__(engine, outbox, clock)
        self._definitions = definitions

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.sequences = SequenceRepository(self.connection, self._definitions)
        self.enrollments = EnrollmentRepository(self.connection)
        self.tasks = TaskRepository(self.connection)
        self.deals = KnownDeals(self.connection)
        self.before_commit(self.deals.write_held)
        return self
