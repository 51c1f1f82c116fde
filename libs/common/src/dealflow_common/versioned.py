"""The versioned save: an aggregate's row is changed only if nobody changed it since it was read.

Each aggregate is one row with an `id` and a `version`. A change is written with
`UPDATE … WHERE id = :id AND version = :loaded`, the version the unit of work read. If
another transaction saved the row in between, no row matches and the change is refused
with `StaleVersion` (412), never written over the other one. This holds whether the read
locked the row or not: it is the whole guard for the catalog, which reads without a lock,
and a second line behind `FOR UPDATE` for opportunities and quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.direct import DirectStatement
from dealflow_common.errors import NotFound, StaleVersion


class VersionedTable:
    """The versioned save of one table's rows; build it once, at import, per table."""

    def __init__(self, table: Table, entity: str) -> None:
        self.table = table
        self.entity = entity
        # Built once and executed with parameters: statements built per call cost more
        # CPU than the database spends running them.
        self._update = DirectStatement(
            update(table).where(
                table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version")
            )
        )
        self._current_version = DirectStatement(
            select(table.c.version).where(table.c.id == bindparam("b_id"))
        )

    async def save(
        self,
        connection: AsyncConnection,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
    ) -> None:
        """Write `values` (columns, `id` excepted) over the row read at `loaded_version`.

        Raises `StaleVersion` with the row's current version when another transaction
        saved it since, or `NotFound` when it is gone; nothing is written then.
        """
        changed = await self._update.rowcount(
            connection, {**values, "b_id": row_id, "b_version": loaded_version}
        )
        if changed == 1:
            return
        current = await self._current_version.first(connection, {"b_id": row_id})
        if current is None:
            raise NotFound(self.entity, row_id)
        raise StaleVersion(self.entity, loaded_version, int(current.version))
