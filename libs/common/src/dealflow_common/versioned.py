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

from sqlalchemy import ColumnElement, Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.direct import DirectStatement
from dealflow_common.errors import NotFound, StaleVersion
from dealflow_common.last_write import LastWrite, WithOutbox
from dealflow_common.with_lines import entry_of


class VersionedTable:
    """The versioned save of one table's rows; build it once, at import, per table."""

    def __init__(
        self,
        table: Table,
        entity: str,
        *,
        unversioned: tuple[str, ...] = (),
        unchanged: tuple[str, ...] = (),
        guard: ColumnElement[bool] | None = None,
    ) -> None:
        """`unversioned`: columns a change may write without a new version (bookkeeping).
        The versioned save leaves them as they are: its `version` check cannot tell
        whether someone wrote them since the read, so writing them back could undo that
        write. The repository writes them itself, under the row's lock.

        `unchanged`: unversioned columns the save also checks, as it checks the version
        (`g_<name>` parameters): a change made on a copy of the row (`recent`) that a
        reader would see them in is refused if they moved since the copy was taken.

        `guard`: a condition on other rows the save also checks, its parameters given
        with each save (`guarded`): a quote changed on a copy checks that its deal's
        row is still the one the copy decided on."""
        self.table = table
        self.entity = entity
        self.unversioned = frozenset(unversioned)
        self.unchanged = unchanged
        self._guarded = guard is not None
        # Built once and executed with parameters: statements built per call cost more
        # CPU than the database spends running them.
        self.versioned_update = update(table).where(
            table.c.id == bindparam("b_id"),
            table.c.version == bindparam("b_version"),
            *(
                table.c[name].is_not_distinct_from(bindparam(f"g_{name}", type_=table.c[name].type))
                for name in unchanged
            ),
            *(() if guard is None else (guard,)),
        )
        self._update = DirectStatement(self.versioned_update)
        self._current_version = DirectStatement(
            select(table.c.version).where(table.c.id == bindparam("b_id"))
        )
        self.columns = [c.name for c in table.c if c.name not in ("id", *unversioned)]
        # Each column's parameter name, made once rather than formatted for every save.
        self.value_params = tuple((f"v_{name}", name) for name in self.columns)
        self._guard_params = tuple((f"g_{name}", name) for name in unchanged)
        self.saved = (
            self.versioned_update.values(  # every column but id, as `v_<name>`
                {name: bindparam(f"v_{name}", type_=table.c[name].type) for name in self.columns}
            )
            .returning(table.c.id)
            .cte("saved")
        )
        """The versioned update as a CTE returning the id it saved (none if refused)."""
        self._with_outbox = WithOutbox(self.saved)

    def with_entry(self, entries: Table, key: str) -> VersionedSaveWithEntry:
        """A save that also adds one row of `entries` (whose `key` column names the saved
        row), in the same statement on PostgreSQL: a stage move and its history entry."""
        # Its saves take no `guarded` parameters; none is needed yet.
        assert not self._guarded, "a save with an entry does not check a guard"
        return VersionedSaveWithEntry(self, entries, key)

    async def save(
        self,
        connection: AsyncConnection,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
        guarded: Mapping[str, Any] | None = None,
    ) -> None:
        """Write `values` (columns, `id` excepted) over the row read at `loaded_version`;
        `guarded`: the `guard`'s parameters.

        Raises `StaleVersion` with the row's current version when another transaction
        saved it since, or `NotFound` when it is gone; nothing is written then.
        """
        params = {name: value for name, value in values.items() if name not in self.unversioned}
        params.update(b_id=row_id, b_version=loaded_version)
        params.update(self.guard_params(values))
        params.update(guarded or {})
        changed = await self._update.rowcount(connection, params)
        await self.refuse_unless_saved(connection, changed, row_id, loaded_version)

    def last_save(
        self,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
        guarded: Mapping[str, Any] | None = None,
    ) -> LastWrite:
        """`save` left for the commit, which sends it with the outbox rows (`last_write`);
        `values`: every column but `id` (the unversioned ones are left out)."""
        params = {param: values[name] for param, name in self.value_params}
        params.update(b_id=row_id, b_version=loaded_version)
        params.update(self.guard_params(values))
        params.update(guarded or {})

        async def alone(connection: AsyncConnection) -> None:
            await self.save(connection, row_id, loaded_version, values, guarded)

        async def refused(connection: AsyncConnection) -> None:
            await self.refuse_unless_saved(connection, 0, row_id, loaded_version)

        return LastWrite(alone, self._with_outbox, params, refused)

    def guard_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The `unchanged` columns' values, as the copy holds them."""
        return {param: values[name] for param, name in self._guard_params}

    async def refuse_unless_saved(
        self, connection: AsyncConnection, changed: int, row_id: Any, loaded_version: int
    ) -> None:
        """Nothing when `changed` is 1; else why the row was not saved."""
        if changed == 1:
            return
        current = await self._current_version.first(connection, {"b_id": row_id})
        if current is None:
            raise NotFound(self.entity, row_id)
        raise StaleVersion(self.entity, loaded_version, int(current.version))


class VersionedSaveWithEntry:
    """`VersionedTable.save` and the insert of one entry row, in one statement: the
    update is a CTE whose returned id the insert takes, so the entry is added only when
    the row was saved (one round trip instead of two)."""

    def __init__(self, versioned: VersionedTable, entries: Table, key: str) -> None:
        self._versioned = versioned
        self._entries = entries
        self._key = key
        saved = versioned.saved
        entry, self._entry_columns = entry_of(entries, key, saved.c.id)
        self._entry_params = tuple((f"e_{name}", name) for name in self._entry_columns)
        self._statement = DirectStatement(entry)
        self._with_outbox = WithOutbox(saved, entry.cte("entry"))

    async def save(
        self,
        connection: AsyncConnection,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
        entry: Mapping[str, Any],
    ) -> None:
        """`VersionedTable.save` of `values` (every column but `id`), and the insert of
        `entry` (every column of the entry but its key and id) only if the row was saved."""
        if connection.dialect.name != "postgresql":  # no writing CTE: two statements
            await self._versioned.save(connection, row_id, loaded_version, values)
            await connection.execute(insert(self._entries), {**entry, self._key: row_id})
            return
        params = self._params(row_id, loaded_version, values, entry)
        changed = await self._statement.rowcount(connection, params)
        await self._versioned.refuse_unless_saved(connection, changed, row_id, loaded_version)

    def last_save(
        self,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
        entry: Mapping[str, Any],
    ) -> LastWrite:
        """`save` left for the commit, which sends it with the outbox rows (`last_write`)."""

        async def alone(connection: AsyncConnection) -> None:
            await self.save(connection, row_id, loaded_version, values, entry)

        async def refused(connection: AsyncConnection) -> None:
            await self._versioned.refuse_unless_saved(connection, 0, row_id, loaded_version)

        params = self._params(row_id, loaded_version, values, entry)
        return LastWrite(alone, self._with_outbox, params, refused)

    def _params(
        self,
        row_id: Any,
        loaded_version: int,
        values: Mapping[str, Any],
        entry: Mapping[str, Any],
    ) -> dict[str, Any]:
        params = {param: values[name] for param, name in self._versioned.value_params}
        params.update({param: entry[name] for param, name in self._entry_params})
        params.update(b_id=row_id, b_version=loaded_version)
        params.update(self._versioned.guard_params(values))
        return params
