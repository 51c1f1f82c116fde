"""Archiving purged quotes: each quote and its lines copied to `quote_archive`, then deleted."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_quote.adapters.tables import quote_archive, quote_lines, quotes


def plain(value: Any) -> Any:
    """A column value as JSON keeps it exactly (ids, moments and amounts as strings)."""
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class QuoteArchive:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def purge_quotes_of(
        self, opportunity_id: UUID, run_id: UUID, policy: PurgePolicySnapshot, now: datetime
    ) -> list[tuple[UUID, str]]:
        """Archive and delete every quote of the deal; (quote id, status it had) of each."""
        rows = (
            await self._connection.execute(
                select(quotes)
                .where(quotes.c.opportunity_id == opportunity_id)
                .order_by(quotes.c.created_at, quotes.c.id)
                .with_for_update()
            )
        ).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        lines: dict[UUID, list[dict[str, Any]]] = {}
        for line in await self._connection.execute(
            select(quote_lines)
            .where(quote_lines.c.quote_id.in_(ids))
            .order_by(quote_lines.c.quote_id, quote_lines.c.line_no)
        ):
            lines.setdefault(line.quote_id, []).append(
                {k: plain(v) for k, v in line._mapping.items()}
            )
        await self._connection.execute(
            insert(quote_archive),
            [
                {
                    "quote_id": r.id,
                    "opportunity_id": opportunity_id,
                    "run_id": run_id,
                    "policy": policy.model_dump(mode="json"),
                    "purged_at": now,
                    "quote": {
                        **{k: plain(v) for k, v in r._mapping.items()},
                        "lines": lines.get(r.id, []),
                    },
                }
                for r in rows
            ],
        )
        # The lines go with their quotes: their foreign key cascades.
        await self._connection.execute(delete(quotes).where(quotes.c.id.in_(ids)))
        return [(r.id, r.status) for r in rows]
