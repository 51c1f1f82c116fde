"""Purge persistence: the deal's live quotes, and archiving a purged deal whole."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_opportunity.adapters.tables import (
    assignment_history,
    deal_tasks,
    notes,
    opportunities,
    opportunity_archive,
    opportunity_owners,
    quote_presence,
    sales_history,
)


def plain(value: Any) -> Any:
    """A column value as JSON keeps it exactly (ids, moments and amounts as strings)."""
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _document(row: Row[Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in row._mapping.items()}


class OpportunityArchive:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    def _insert(self) -> Any:
        return (postgresql if self._connection.dialect.name == "postgresql" else sqlite).insert

    async def quote_created(self, quote_id: UUID, opportunity_id: UUID) -> None:
        await self._connection.execute(
            self._insert()(quote_presence)
            .values(quote_id=quote_id, opportunity_id=opportunity_id, purged_at=None)
            .on_conflict_do_nothing(index_elements=["quote_id"])
        )

    async def quote_purged(self, quote_id: UUID, opportunity_id: UUID, at: datetime) -> None:
        statement = self._insert()(quote_presence).values(
            quote_id=quote_id, opportunity_id=opportunity_id, purged_at=at
        )
        await self._connection.execute(
            statement.on_conflict_do_update(
                index_elements=["quote_id"], set_={"purged_at": statement.excluded.purged_at}
            )
        )

    async def live_quotes(self, opportunity_id: UUID) -> int:
        count = await self._connection.scalar(
            select(func.count())
            .select_from(quote_presence)
            .where(
                quote_presence.c.opportunity_id == opportunity_id,
                quote_presence.c.purged_at.is_(None),
            )
        )
        return int(count or 0)

    async def archived(self, opportunity_id: UUID) -> Row[Any] | None:
        return (
            await self._connection.execute(
                select(opportunity_archive).where(
                    opportunity_archive.c.opportunity_id == opportunity_id
                )
            )
        ).first()

    async def archive_and_delete(
        self,
        opportunity: Row[Any],
        run_id: UUID,
        policy: PurgePolicySnapshot,
        now: datetime,
    ) -> None:
        """Copy the deal and everything of it to the archive, then delete it (cascades)."""
        document = _document(opportunity)
        parts: list[tuple[str, Table, Any]] = [
            ("owners", opportunity_owners, opportunity_owners.c.position),
            ("notes", notes, notes.c.added_at),
            ("sales_history", sales_history, sales_history.c.id),
            ("assignment_history", assignment_history, assignment_history.c.id),
        ]
        for name, table, order in parts:
            rows = await self._connection.execute(
                select(table).where(table.c.opportunity_id == opportunity.id).order_by(order)
            )
            document[name] = [_document(r) for r in rows]
        await self._connection.execute(
            insert(opportunity_archive).values(
                opportunity_id=opportunity.id,
                stage=opportunity.stage,
                closed_at=opportunity.closed_at,
                run_id=run_id,
                policy=policy.model_dump(mode="json"),
                purged_at=now,
                opportunity=document,
            )
        )
        # Its follow-up tasks are the sequence service's; the copy here just goes.
        for table in (*(table for _, table, _ in parts), deal_tasks):
            await self._connection.execute(
                delete(table).where(table.c.opportunity_id == opportunity.id)
            )
        await self._connection.execute(
            delete(opportunities).where(opportunities.c.id == opportunity.id)
        )

    async def locked_row(self, opportunity_id: UUID) -> Row[Any] | None:
        query = select(opportunities).where(opportunities.c.id == opportunity_id)
        if self._connection.dialect.name == "postgresql":
            query = query.with_for_update()
        return (await self._connection.execute(query)).first()
