"""The opportunity service's unit of work: one transaction with its repository."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Self
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.idempotency import RequestKeys
from dealflow_common.last_write import LastWrite
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.recent import RecentCopies
from dealflow_common.uow import UnitOfWork
from dealflow_opportunity.adapters.archive import OpportunityArchive
from dealflow_opportunity.adapters.custom_fields import CustomFieldDefinitions, KeptDefinitions
from dealflow_opportunity.adapters.follow_ups import DealTasks
from dealflow_opportunity.adapters.repository import OpportunityRepository
from dealflow_opportunity.adapters.tables import request_keys
from dealflow_opportunity.application.metrics import DealMetrics
from dealflow_opportunity.domain.model import Opportunity


class OpportunityUnitOfWork(UnitOfWork):
    opportunities: OpportunityRepository
    tasks: DealTasks
    custom_fields: CustomFieldDefinitions
    request_keys: RequestKeys

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        clock: Callable[[], datetime],
        metrics: DealMetrics | None = None,
        recent: RecentCopies[UUID, Opportunity] | None = None,
        definitions: KeptDefinitions | None = None,
    ) -> None:
        super().__init__(engine, outbox, clock)
        self.metrics = metrics
        self._recent = recent
        self._definitions = definitions
        self._archive: OpportunityArchive | None = None

    @property
    def archive(self) -> OpportunityArchive:
        """The quotes' presence and the purge's archive, made at first use: what it
        holds back is written when the work commits."""
        if self._archive is None:
            self._archive = OpportunityArchive(self.connection)
            self.before_commit(self._archive.write_held)
        return self._archive

    async def commit(self, last: LastWrite | None = None) -> None:
        recorded = self.recorded
        await super().commit(last)
        if self._recent is not None:
            for opportunity in self.opportunities.written.values():
                self._recent.keep(opportunity.id, opportunity)
        if self.metrics is not None:
            self.metrics.committed(recorded)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._archive = None
        self.opportunities = OpportunityRepository(self.connection, self._recent, self._served)
        self.tasks = DealTasks(self.connection)
        self.custom_fields = CustomFieldDefinitions(
            self.connection, self._definitions, self.served_copy
        )
        self.request_keys = RequestKeys(self.connection, request_keys)
        return self

    def _served(self, opportunity_id: UUID) -> None:
        recent = self._recent
        assert recent is not None, "a copy is served only where copies are kept"
        self.served_copy(lambda: recent.refused(opportunity_id))
