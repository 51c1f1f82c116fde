"""Purge persistence: the deal's live quotes, and archiving a purged deal whole."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.projection import HeldInserts
from dealflow_opportunity.adapters.tables import (
    assignment_history,
    notes,
    opportunities,
    opportunity_archive,
    opportunity_owners,
    opportunity_shares,
    purge_requests,
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


# What is archived with the deal, each read with one statement built once (the purge
# reads them for every deal of a batch). Their rows go with the deal's: the foreign
# keys cascade.
_PARTS: list[tuple[str, Any]] = [
    (
        name,
        select(table).where(table.c.opportunity_id == bindparam("b_id")).order_by(order),
    )
    for name, table, order in [
        ("owners", opportunity_owners, opportunity_owners.c.position),
        ("shares", opportunity_shares, opportunity_shares.c.position),
        ("notes", notes, notes.c.added_at),
        ("sales_history", sales_history, sales_history.c.id),
        ("assignment_history", assignment_history, assignment_history.c.id),
    ]
]
_DELETE = delete(opportunities).where(opportunities.c.id == bindparam("b_id"))
_INSERT_ARCHIVE = insert(opportunity_archive)
_QUOTE_EVENTS: dict[str, tuple[Any, Any]] = {}


def _quote_statements(dialect: str) -> tuple[DirectStatement, DirectStatement]:
    """(quote created, quote purged) upserts of `quote_presence` for the dialect, built
    once, run directly (every quote created is one)."""
    statements = _QUOTE_EVENTS.get(dialect)
    if statements is None:
        insert_ = (postgresql if dialect == "postgresql" else sqlite).insert(quote_presence)
        statements = (
            DirectStatement(insert_.on_conflict_do_nothing(index_elements=["quote_id"])),
            DirectStatement(
                insert_.on_conflict_do_update(
                    index_elements=["quote_id"], set_={"purged_at": insert_.excluded.purged_at}
                )
            ),
        )
        _QUOTE_EVENTS[dialect] = statements
    return statements


class OpportunityArchive:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._created = HeldInserts(key="quote_id")
        """Quotes created and not inserted yet: `write_held` (at the commit, or before
        anything here reads or changes the quotes' presence) inserts a consumer batch's
        quotes in one round trip."""

    def quote_created(self, quote_id: UUID, opportunity_id: UUID) -> None:
        self._created.add(
            {"quote_id": quote_id, "opportunity_id": opportunity_id, "purged_at": None}
        )

    async def write_held(self) -> None:
        created, _ = _quote_statements(self._connection.dialect.name)
        await self._created.write(self._connection, created)

    async def quote_purged(self, quote_id: UUID, opportunity_id: UUID, at: datetime) -> None:
        await self.write_held()
        _, purged = _quote_statements(self._connection.dialect.name)
        await purged.rowcount(
            self._connection,
            {"quote_id": quote_id, "opportunity_id": opportunity_id, "purged_at": at},
        )

    async def live_quotes(self, opportunity_id: UUID) -> int:
        await self.write_held()
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
        await self.write_held()
        document = _document(opportunity)
        for name, query in _PARTS:
            rows = await self._connection.execute(query, {"b_id": opportunity.id})
            document[name] = [_document(r) for r in rows]
        await self._connection.execute(
            _INSERT_ARCHIVE,
            {
                "opportunity_id": opportunity.id,
                "stage": opportunity.stage,
                "closed_at": opportunity.closed_at,
                "run_id": run_id,
                "policy": policy.model_dump(mode="json"),
                "purged_at": now,
                "opportunity": document,
            },
        )
        # Owners, notes, sales history and assignments go with it: their foreign keys
        # cascade (ON DELETE CASCADE; SQLite enforces them too, `foreign_keys=ON`).
        await self._connection.execute(_DELETE, {"b_id": opportunity.id})
        await self._connection.execute(
            delete(purge_requests).where(purge_requests.c.opportunity_id == opportunity.id)
        )

    async def wait_for_quotes(
        self, opportunity_id: UUID, run_id: UUID, policy: PurgePolicySnapshot, now: datetime
    ) -> None:
        """Keep the agent's request until the deal's last quote is purged (the newest
        request wins: its run is the one that waits for the answer)."""
        await self._connection.execute(
            delete(purge_requests).where(purge_requests.c.opportunity_id == opportunity_id)
        )
        await self._connection.execute(
            insert(purge_requests).values(
                opportunity_id=opportunity_id,
                run_id=run_id,
                policy=policy.model_dump(mode="json"),
                requested_at=now,
            )
        )

    async def waiting_request(self, opportunity_id: UUID) -> Row[Any] | None:
        return (
            await self._connection.execute(
                select(purge_requests).where(purge_requests.c.opportunity_id == opportunity_id)
            )
        ).first()

    async def locked_row(self, opportunity_id: UUID) -> Row[Any] | None:
        query = select(opportunities).where(opportunities.c.id == opportunity_id)
        if self._connection.dialect.name == "postgresql":
            query = query.with_for_update()
        return (await self._connection.execute(query)).first()
