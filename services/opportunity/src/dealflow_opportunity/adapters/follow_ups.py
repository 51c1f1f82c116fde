"""The deal's follow-up tasks as the sequence service tells them (`deal_tasks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.messaging.projection import AppliedSequences
from dealflow_opportunity.adapters.tables import deal_tasks
from dealflow_opportunity.domain.next_action import OpenTask

_SELECT = select(deal_tasks).where(deal_tasks.c.task_id == bindparam("b_id"))
_INSERT = insert(deal_tasks)
_UPDATE = update(deal_tasks).where(deal_tasks.c.task_id == bindparam("b_id"))
_EARLIEST_OPEN = (
    select(deal_tasks.c.task_id, deal_tasks.c.title, deal_tasks.c.due_at)
    .where(
        deal_tasks.c.opportunity_id == bindparam("b_opportunity"),
        deal_tasks.c.done_at.is_(None),
        deal_tasks.c.due_at.is_not(None),
    )
    .order_by(deal_tasks.c.due_at, deal_tasks.c.task_id)
    .limit(1)
)


class DealTasks:
    """Writes are made with the deal's row locked (its events apply one at a time)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def learn(
        self,
        task_id: UUID,
        opportunity_id: UUID,
        facts: Mapping[str, Any],
        *,
        source: str,
        sequence: int,
    ) -> None:
        """Take the facts (`title`, `due_at`, `done_at`) newer than those held."""
        row = (await self._connection.execute(_SELECT, {"b_id": task_id})).first()
        held = AppliedSequences.from_document(row.applied if row is not None else None)
        verdict = held.offer(source=source, sequence=sequence, carried=facts)
        values = {name: facts[name] for name in verdict.fields}
        applied = verdict.applied.to_document()
        if row is None:
            await self._connection.execute(
                _INSERT,
                {
                    "task_id": task_id,
                    "opportunity_id": opportunity_id,
                    "title": None,
                    "due_at": None,
                    "done_at": None,
                    **values,
                    "applied": applied,
                },
            )
        elif values:
            await self._connection.execute(_UPDATE, {"b_id": task_id, **values, "applied": applied})

    async def earliest_open(self, opportunity_id: UUID) -> OpenTask | None:
        """The deal's open task due first (an overdue one included), if any."""
        row = (
            await self._connection.execute(_EARLIEST_OPEN, {"b_opportunity": opportunity_id})
        ).first()
        if row is None:
            return None
        return OpenTask(row.task_id, row.title or "", row.due_at)
