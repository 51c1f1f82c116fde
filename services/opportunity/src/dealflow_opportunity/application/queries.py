"""Reads of the opportunity service, filtered by what the caller may see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.db import reading
from dealflow_opportunity.adapters.custom_fields import CustomFieldDefinitions
from dealflow_opportunity.adapters.repository import OpportunityFilter, OpportunityQueries
from dealflow_opportunity.domain import access
from dealflow_opportunity.domain.custom_fields import CustomFieldDefinition
from dealflow_opportunity.domain.errors import OpportunityNotFound
from dealflow_opportunity.domain.model import (
    AssignmentEntry,
    Note,
    Opportunity,
    SalesHistoryEntry,
)


class OpportunityReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _queries(self) -> AsyncIterator[OpportunityQueries]:
        async with reading(self._engine) as connection:
            yield OpportunityQueries(connection)

    @staticmethod
    async def _visible(
        queries: OpportunityQueries, opportunity_id: UUID, viewer: Principal
    ) -> Opportunity:
        opportunity = await queries.find(opportunity_id)
        if opportunity is None:
            raise OpportunityNotFound(opportunity_id)
        if not access.can_view(opportunity, viewer):
            raise OpportunityNotFound(opportunity_id).unseen()
        return opportunity

    async def get(self, opportunity_id: UUID, viewer: Principal) -> Opportunity:
        async with self._queries() as queries:
            return await self._visible(queries, opportunity_id, viewer)

    async def page(
        self,
        viewer: Principal,
        where: OpportunityFilter,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Opportunity]:
        async with self._queries() as queries:
            return await queries.page(viewer, where, after, limit)

    async def history(self, opportunity_id: UUID, viewer: Principal) -> list[SalesHistoryEntry]:
        async with self._queries() as queries:
            await self._visible(queries, opportunity_id, viewer)
            return await queries.history(opportunity_id)

    async def notes(self, opportunity_id: UUID, viewer: Principal) -> list[Note]:
        async with self._queries() as queries:
            await self._visible(queries, opportunity_id, viewer)
            return await queries.notes(opportunity_id)

    async def assignments(self, opportunity_id: UUID, viewer: Principal) -> list[AssignmentEntry]:
        async with self._queries() as queries:
            await self._visible(queries, opportunity_id, viewer)
            return await queries.assignments(opportunity_id)

    async def custom_fields(self) -> dict[str, CustomFieldDefinition]:
        """Every definition, retired ones included; anyone who reads deals reads them."""
        async with reading(self._engine) as connection:
            return await CustomFieldDefinitions(connection).all()
