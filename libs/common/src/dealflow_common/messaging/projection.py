"""Projections move forward only, field by field (DESIGN.md section 2).

A service keeps a local copy of another service's entity from that entity's events.
The relay may publish a record again, so one subject's events can arrive as 3, 5, 4, 5:
the inbox skips the second 5 (an id it has seen) but 4 is new to it, and applying it
after 5 would put the copy back in time (a lost deal open again).

"Apply only an event newer than the last one applied" is not enough when events are
partial. If 5 says the stage and 4 says the team, then in the order 3, 5, 4 a whole-row
rule drops 4 and the team it changed is never learnt. So each projected field remembers
the sequence of the event that last set it, and an event sets only those of the fields
it carries that were last set by an older event. Arrival order no longer matters: any
order of the same events leaves the same copy.

Sequences count per subject and per source, so they are comparable only within one
source: a projection follows the source it first heard from, and an event of another
source is refused (`ForeignSource`) rather than compared with numbers it has no
relation to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, Table, any_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.direct import DirectStatement


class ForeignSource(ValueError):
    """An event from another source than the one whose sequences the projection holds."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"the projection follows {expected}; an event from {got} was offered")
        self.expected = expected
        self.got = got


@dataclass(frozen=True, slots=True)
class FieldsToApply:
    """An event's verdict: the fields it may write, and what the row remembers after."""

    fields: frozenset[str]
    applied: AppliedSequences


@dataclass(frozen=True, slots=True)
class AppliedSequences:
    """What a projection row remembers: the source it follows and, per field, the
    sequence of the event that last set that field (a field never set counts as 0)."""

    source: str | None = None
    by_field: Mapping[str, int] = field(default_factory=dict)

    def offer(self, *, source: str, sequence: int, carried: Iterable[str]) -> FieldsToApply:
        """Which of the `carried` fields an event of `source` numbered `sequence` sets:
        those last set by an older event. Equal is not newer: it is the same event."""
        if self.source is not None and self.source != source:
            raise ForeignSource(self.source, source)
        newer = frozenset(name for name in carried if self.by_field.get(name, 0) < sequence)
        return FieldsToApply(
            fields=newer,
            applied=AppliedSequences(
                source=source, by_field={**self.by_field, **dict.fromkeys(newer, sequence)}
            ),
        )

    def to_document(self) -> dict[str, Any]:
        """The JSON form kept in the projection's row."""
        return {"source": self.source, "fields": dict(sorted(self.by_field.items()))}

    @classmethod
    def from_document(cls, document: Mapping[str, Any] | None) -> AppliedSequences:
        """Read `to_document`'s form back; None (a row older than its sequences) is empty."""
        if not document:
            return cls()
        return cls(
            source=document.get("source"),
            by_field={str(name): int(seq) for name, seq in document.get("fields", {}).items()},
        )


class HeldRows:
    """One transaction's rows of a projection table, held for a consumer's batch.

    `ProjectionRows.lock_ahead` locks the batch's rows in one statement and keeps them
    here; each event's handler then takes its row from here, and what it saves is kept
    here too (a deal's later events in the batch see what its earlier ones wrote) and
    written back once, in one round trip, by `ProjectionRows.write_held` before the
    transaction commits. Only rows this transaction holds locked are kept, so nobody
    else can change them meanwhile; a key never locked ahead is read and written at
    once, as without a batch. While a batch is applied, its handlers read and write
    these rows only through `ProjectionRows` (a statement of its own would not see
    what is waiting here).
    """

    def __init__(self) -> None:
        self.rows: dict[object, Row[Any] | None] = {}
        """Each key locked ahead: its row as this transaction sees it, None if it has none."""
        self.unwritten: dict[object, dict[str, Any]] = {}
        """What saves left to write, per key: every column but the key."""
        self.unadded: dict[object, dict[str, Any]] = {}
        """Rows this batch added, not inserted yet, per key: every column."""


class HeldInserts:
    """Rows a consumer's batch inserts, held until `write` sends them in one round trip
    instead of one statement per event: at the commit, and before anything of the batch
    reads or changes their table (the caller's rule). Sent in the order of `key`, so that
    two batches inserting overlapping rows (replicas during a rebalance) take their
    locks in one order."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)

    async def write(self, connection: AsyncConnection, statement: DirectStatement) -> None:
        if self._rows:
            rows = sorted(self._rows, key=lambda row: str(row[self._key]))
            self._rows = []
            await statement.each(connection, rows)


class _HeldRow:
    """A row held in memory: read by column name like the rows read from the database."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


class ProjectionRows:
    """The rows of one projection table, keyed by one column: the storage every
    service's projection shares. The service maps rows to its own object and back.

    `lock_or_add` is how an event is applied: the row is added when absent (a concurrent
    insert of the same row waits for the other and then does nothing), then read and
    locked until commit, so two events' read-merge-write never interleave. SQLite has
    no row locks; its writers are serialised by the database.

    A consumer applies a batch of events in one transaction. With `HeldRows` given, the
    batch's rows are locked in one statement (`lock_ahead`) instead of one per event,
    and written back in one round trip (`write_held`) instead of one per event. The
    rows the batch adds are inserted there too, in one round trip for the batch.
    """

    def __init__(self, table: Table, key: str = "id") -> None:
        self._key = key
        column = table.c[key]
        select_row = select(table).where(column == bindparam("b_key"))
        self._select = DirectStatement(select_row)
        self._select_for_update = DirectStatement(select_row.with_for_update())
        self._select_for_share = DirectStatement(select_row.with_for_update(read=True))
        self._update = DirectStatement(update(table).where(column == bindparam("b_key")))
        self._columns = frozenset(table.c.keys())
        # A plain insert: `write_held` adds only keys that had no row when locked ahead,
        # so a conflict means another transaction added one since (`write_held`).
        self._insert = DirectStatement(table.insert())
        # Locked in key order, so that two transactions locking overlapping batches
        # (replicas during a rebalance) take their locks in one order and cannot deadlock.
        self._lock_many = DirectStatement(
            select(table)
            .where(column == any_(bindparam("b_keys", type_=postgresql.ARRAY(column.type))))
            .order_by(column)
            .with_for_update()
        )
        self._insert_if_absent = {
            name: DirectStatement(
                dialect.insert(table)
                .on_conflict_do_nothing(index_elements=[column])
                .returning(*table.c)
            )
            for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
        }

    async def get(
        self,
        connection: AsyncConnection,
        key: object,
        *,
        lock: bool = False,
        share: bool = False,
        held: HeldRows | None = None,
    ) -> Row[Any] | None:
        """The row, unlocked; `lock` holds it for update, `share` for share (PostgreSQL).
        A row in `held` is answered from there (it is locked for update already)."""
        if held is not None and key in held.rows:
            return held.rows[key]
        query = self._select
        if (lock or share) and connection.dialect.name == "postgresql":
            query = self._select_for_update if lock else self._select_for_share
        row: Row[Any] | None = await query.first(connection, {"b_key": key})
        return row

    async def lock_many(
        self, connection: AsyncConnection, keys: Iterable[object]
    ) -> dict[object, Row[Any] | None]:
        """The rows of `keys`, locked until commit by one statement: each key's row, or
        None when it has none (nothing is locked for it). Empty on SQLite, which has no
        row locks (its writers are serialised anyway)."""
        wanted = set(keys)
        if not wanted or connection.dialect.name != "postgresql":
            return {}
        found: dict[object, Row[Any] | None] = dict.fromkeys(wanted)
        for row in await self._lock_many.all(connection, {"b_keys": list(wanted)}):
            found[row._mapping[self._key]] = row
        return found

    async def lock_ahead(
        self, connection: AsyncConnection, keys: Iterable[object], held: HeldRows
    ) -> None:
        """Lock the rows of `keys` (`lock_many`) and keep them in `held` (a key without
        a row is kept as None: `lock_or_add` adds it). Keys held already are not read
        again. On SQLite nothing is held: every row is read and written at once."""
        held.rows.update(await self.lock_many(connection, set(keys).difference(held.rows)))

    async def lock_or_add(
        self, connection: AsyncConnection, unseen: Mapping[str, Any], held: HeldRows | None = None
    ) -> Row[Any]:
        """The row of `unseen`'s key, locked; `unseen` is added first when there is none.

        The row is looked for first: every event but a deal's first finds it, so adding
        costs its statement only once per row. The row added is returned by its insert
        (and is this transaction's until it commits); only when another transaction
        added it meanwhile is it read again, locked. A key in `held` is not looked for:
        the row added for it is kept there and inserted by `write_held` with the
        batch's others (when `unseen` names every column, as a row read back would).
        """
        key = unseen[self._key]
        row = await self.get(connection, key, lock=True, held=held)
        if row is None and held is not None and key in held.rows and self._columns <= unseen.keys():
            added = {name: unseen[name] for name in self._columns}
            held.unadded[key] = added
            row = held.rows[key] = _HeldRow(dict(added))  # type: ignore[assignment]
            return row  # type: ignore[return-value]
        if row is None:
            insert = self._insert_if_absent[connection.dialect.name]
            row = await insert.first(connection, unseen) or await self.get(
                connection, key, lock=True
            )
            assert row is not None  # inserted above, or inserted by another and committed
            if held is not None and key in held.rows:
                held.rows[key] = row
        return row

    async def save(
        self, connection: AsyncConnection, values: Mapping[str, Any], held: HeldRows | None = None
    ) -> None:
        """Write every column of `values` but the key, to the row of its key: at once,
        or, for a row in `held`, there, until `write_held`."""
        key = values[self._key]
        changed = {name: value for name, value in values.items() if name != self._key}
        before = held.rows.get(key) if held is not None else None
        if held is not None and before is not None:
            held.rows[key] = _HeldRow({**before._mapping, **changed})  # type: ignore[assignment]
            if key in held.unadded:
                held.unadded[key].update(changed)  # inserted as it stands at the end
            else:
                held.unwritten.setdefault(key, {}).update(changed)
            return
        await self._update.rowcount(connection, {**changed, "b_key": key})

    async def write_held(self, connection: AsyncConnection, held: HeldRows) -> None:
        """Insert the rows the batch added and write what saves left in `held`, each in
        one round trip (before the commit).

        A key added had no row when the batch locked its keys, and a missing row cannot
        be locked: if another transaction (a replica, during a rebalance) added the same
        key since, the insert fails on the key and the batch rolls back. The consumer
        then applies its events one by one, and each attempt finds that row and locks it.
        """
        if held.unadded:
            added = [held.unadded[key] for key in sorted(held.unadded, key=str)]
            held.unadded.clear()
            await self._insert.each(connection, added)
        if not held.unwritten:
            return
        by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
        for key, changed in held.unwritten.items():
            by_columns.setdefault(frozenset(changed), []).append({**changed, "b_key": key})
        held.unwritten.clear()
        for rows in by_columns.values():
            await self._update.each(connection, rows)
