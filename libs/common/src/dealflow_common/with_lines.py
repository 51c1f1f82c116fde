"""A new row and its lines (a quote's, an order's) inserted by one statement.

The row's insert is a CTE whose returned key the lines take; the lines travel as one
array per column and are unnested, so the statement's text is the same whatever their
number and stays prepared (one line, the common case, has a statement of its own that
binds its values as they are). One round trip instead of two for every quote and order
created. SQLite has no writing CTE: there it is the row's insert, then the lines'.

Other rows may go with the new one (`also`): a deal's first history entry and its search
document. On PostgreSQL they are more CTEs of the same statement, each taking the new
row's id; on SQLite the caller writes them after `add`.

A `gate` makes the insert conditional on PostgreSQL: a query the row is inserted after
only if it returns a row. A quote is drafted only while its deal is open; the gate reads
the deal's row `FOR SHARE` in the statement itself, so a unit of work that read the deal
unlocked (`one_write`) still cannot store a quote on a deal closed in between: the close
waits for the statement, or the statement waits for the close and then finds nothing.
On SQLite the caller checks in its transaction, which no other writer can interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    bindparam,
    column,
    exists,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.direct import DirectStatement
from dealflow_common.last_write import LastWrite, Refusal, WithOutbox, never_refused


def entry_of(entries: Table, key: str, row_id: ColumnElement[Any]) -> tuple[Insert, list[str]]:
    """The insert of one row of `entries` whose `key` column takes `row_id` (a column of
    a writing CTE), its other columns bound as `e_<name>`: those names are returned. An
    autoincremented id is the database's."""
    names = [c.name for c in entries.c if c.name != key and not (c.primary_key and c.autoincrement)]
    entry = insert(entries).from_select(
        [key, *names],
        select(row_id, *(bindparam(f"e_{n}", type_=entries.c[n].type) for n in names)),
    )
    return entry, names


class InsertWithLines:
    """Build it once, at import: `table`'s rows and `lines`' rows keyed to them by
    `key` (the lines' column holding the row's `id`). `also`: given the new row's id,
    the inserts that go with it on PostgreSQL (`entry_of`, an `INSERT ... SELECT`);
    `gate`: the query without whose row nothing is inserted there. Their parameters come
    with each run's (`also_params`)."""

    def __init__(
        self,
        table: Table,
        lines: Table,
        key: str,
        also: Callable[[ColumnElement[Any]], Sequence[Insert]] | None = None,
        gate: Select[Any] | None = None,
    ) -> None:
        self._key = key
        self._gated = gate is not None
        self._columns = [c.name for c in table.c]
        self._line_columns = [c.name for c in lines.c if c.name != key]
        # Each column's parameter name, made once rather than formatted for every add.
        self._row_params = tuple((f"r_{name}", name) for name in self._columns)
        self._line_params = tuple((f"l_{name}", name) for name in self._line_columns)
        values = {name: bindparam(f"r_{name}", type_=table.c[name].type) for name in self._columns}
        if gate is None:
            new_row = insert(table).values(values)
        else:
            opened = select(*values.values()).where(exists(gate.cte("gate").select()))
            new_row = insert(table).from_select(list(values), opened)
        row = new_row.returning(table.c.id).cte("added")
        others = [
            other.cte(f"added_also_{n}") for n, other in enumerate(also(row.c.id) if also else ())
        ]
        # Per number of lines, one or any: the statement alone, and with the outbox.
        self._statements = {
            one: self._with_lines(row, lines, key, others, one) for one in (False, True)
        }
        self._row = DirectStatement(insert(table))
        self._each_line = DirectStatement(insert(lines))

    def _with_lines(
        self, row: Any, lines: Table, key: str, others: list[Any], one: bool
    ) -> tuple[DirectStatement, WithOutbox]:
        """The row's insert with its lines' (and `others`): of any number of lines, bound
        as one array per column and unnested, or (`one`) of one line, its values bound as
        they are. One line is the common case (a quote of one product, a deal's one
        owner), and each array costs asyncpg three or four instance checks against
        `collections.abc`, calls into `abc` (`outbox.appended_after` does the same)."""
        if one:
            added: Any = select(
                *(
                    bindparam(f"l_{name}", type_=lines.c[name].type).label(name)
                    for name in self._line_columns
                )
            ).subquery("line")
        else:
            added = func.unnest(
                *(
                    bindparam(f"l_{name}", type_=postgresql.ARRAY(lines.c[name].type))
                    for name in self._line_columns
                )
            ).table_valued(*(column(name, lines.c[name].type) for name in self._line_columns))
            added = added.render_derived(name="line")  # AS line(line_no, ...)
        rows = select(row.c.id, *(added.c[name] for name in self._line_columns)).select_from(
            row.join(added, true())
        )
        both = insert(lines).from_select([key, *self._line_columns], rows)
        if others:
            both = both.add_cte(*others)
        return DirectStatement(both), WithOutbox(row, both.cte("added_lines"), *others)

    async def add(
        self,
        connection: AsyncConnection,
        row: Mapping[str, Any],
        lines: Sequence[Mapping[str, Any]],
        also_params: Mapping[str, Any] | None = None,
    ) -> bool:
        """Insert `row` (every column of the table) and `lines` (every column of a line
        but the key, which is the row's id); on PostgreSQL, `also`'s rows too. False when
        the gate stopped it (nothing is inserted then)."""
        if connection.dialect.name != "postgresql":
            await self._row.rowcount(connection, row)
            await self._each_line.each(
                connection, [{**line, self._key: row["id"]} for line in lines]
            )
            return True
        both, _ = self._statements[len(lines) == 1]
        inserted = await both.rowcount(connection, self._params(row, lines, also_params))
        # Lines are inserted only after their row: none of them, none of it.
        return not (self._gated and lines and inserted == 0)

    def last_add(
        self,
        row: Mapping[str, Any],
        lines: Sequence[Mapping[str, Any]],
        also_params: Mapping[str, Any] | None = None,
        refused: Refusal = never_refused,
    ) -> LastWrite:
        """`add` left for the commit, which sends it with the outbox rows (`last_write`);
        `refused` raises why, when the gate stopped it."""

        async def alone(connection: AsyncConnection) -> None:
            if not await self.add(connection, row, lines, also_params):
                await refused(connection)

        params = self._params(row, lines, also_params)
        _, with_outbox = self._statements[len(lines) == 1]
        return LastWrite(alone, with_outbox, params, refused)

    def _params(
        self,
        row: Mapping[str, Any],
        lines: Sequence[Mapping[str, Any]],
        also_params: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        params = {**(also_params or {})}
        params.update({param: row[name] for param, name in self._row_params})
        if len(lines) == 1:
            (line,) = lines
            for param, name in self._line_params:
                params[param] = line[name]
        else:
            for param, name in self._line_params:
                params[param] = [line[name] for line in lines]
        return params
