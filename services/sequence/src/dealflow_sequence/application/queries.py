"""Reads of the sequence service, filtered by what the caller may see.

Every read runs on a `READ_ONLY` connection: on SQLite it then starts with a plain
`BEGIN` and never waits for, nor blocks, the one writer.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.db import reading
from dealflow_sequence.adapters.repository import (
    DefinitionCache,
    EnrollmentQueries,
    KnownDeals,
    SequenceRepository,
    TaskQueries,
)
from dealflow_sequence.domain import access
from dealflow_sequence.domain.deal import KnownDeal
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.enrollment import Enrollment, StepRun
from dealflow_sequence.domain.errors import OpportunityNotFound, TaskNotFound
from dealflow_sequence.domain.tasks import Task, TaskFilter


@dataclass(frozen=True, slots=True)
class FollowUp:
    """An enrollment with the steps that ran and the definition version it runs."""

    enrollment: Enrollment
    runs: list[StepRun]
    definition: SequenceDefinition


class SequenceReader:
    def __init__(self, engine: AsyncEngine, definitions: DefinitionCache) -> None:
        self._engine = engine
        self._definitions = definitions

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    async def sequences(self, include_retired: bool) -> list[SequenceDefinition]:
        async with self._read() as connection:
            return await SequenceRepository(connection, self._definitions).listed(include_retired)

    async def sequence(self, sequence_id: UUID) -> SequenceDefinition:
        async with self._read() as connection:
            return await SequenceRepository(connection, self._definitions).get(sequence_id)

    async def _visible_deal(
        self, connection: AsyncConnection, opportunity_id: UUID, viewer: Principal
    ) -> KnownDeal:
        deal = await KnownDeals(connection).get(opportunity_id)
        if deal is None:
            raise OpportunityNotFound(opportunity_id)
        if not access.can_view(deal, viewer):
            raise OpportunityNotFound(opportunity_id).unseen()
        return deal

    async def follow_ups(self, opportunity_id: UUID, viewer: Principal) -> list[FollowUp]:
        async with self._read() as connection:
            await self._visible_deal(connection, opportunity_id, viewer)
            found = await EnrollmentQueries(connection).of_opportunity(opportunity_id)
            runs = await EnrollmentQueries(connection).runs_of([e.id for e in found])
            sequences = SequenceRepository(connection, self._definitions)
            return [
                FollowUp(e, runs[e.id], await sequences.version(e.sequence_id, e.sequence_version))
                for e in found
            ]

    async def follow_up(self, enrollment: Enrollment) -> FollowUp:
        async with self._read() as connection:
            runs = await EnrollmentQueries(connection).runs_of([enrollment.id])
            definition = await SequenceRepository(connection, self._definitions).version(
                enrollment.sequence_id, enrollment.sequence_version
            )
            return FollowUp(enrollment, runs[enrollment.id], definition)

    async def tasks(
        self,
        viewer: Principal,
        *,
        opportunity_id: UUID | None,
        assignee: str | None,
        state: TaskFilter | None,
        now: datetime,
        limit: int,
    ) -> list[Task]:
        async with self._read() as connection:
            if opportunity_id is not None:
                await self._visible_deal(connection, opportunity_id, viewer)
            queries = TaskQueries(connection)

            async def search(after: tuple[datetime, UUID] | None) -> list[Task]:
                return await queries.search(
                    opportunity_id=opportunity_id,
                    assignee=assignee,
                    state=state,
                    now=now,
                    limit=limit,
                    after=after,
                )

            if viewer.sees_everything or opportunity_id is not None:
                return await search(None)
            # The rule is applied to each task's deal here, not in SQL: read on past the
            # tasks the caller may not see, so that the list holds the `limit` first
            # visible ones, as it would if the hidden ones did not exist.
            deals = KnownDeals(connection)
            visible: dict[UUID, bool] = {}
            shown: list[Task] = []
            after: tuple[datetime, UUID] | None = None
            while len(shown) < limit:
                batch = await search(after)
                for task in batch:
                    if task.opportunity_id not in visible:
                        deal = await deals.get(task.opportunity_id)
                        visible[task.opportunity_id] = deal is not None and access.can_view(
                            deal, viewer
                        )
                    if visible[task.opportunity_id] and len(shown) < limit:
                        shown.append(task)
                if len(batch) < limit:
                    break
                after = (batch[-1].due_at, batch[-1].id)
            return shown

    async def task(self, task_id: UUID, viewer: Principal) -> Task:
        async with self._read() as connection:
            task = await TaskQueries(connection).find(task_id)
            deal = await KnownDeals(connection).get(task.opportunity_id) if task else None
        if task is None or deal is None:
            raise TaskNotFound(task_id)
        if not access.can_view(deal, viewer):
            raise TaskNotFound(task_id).unseen()
        return task

    async def stale(self, viewer: Principal, today: date) -> list[KnownDeal]:
        async with self._read() as connection:
            found = await KnownDeals(connection).stale(today)
        return [d for d in found if access.can_view(d, viewer)]
