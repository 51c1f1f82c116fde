"""The hottest statements, sent straight to asyncpg inside SQLAlchemy's transaction.

Measured on the 2-core bench machine, SQLAlchemy Core spends about 200 µs of client
CPU to run a one-row `SELECT` by key that asyncpg alone runs in 70 µs, and 160 µs against
60 µs for an `UPDATE`: it compiles (from a cache), builds an execution context, wraps
the cursor and processes every row. The projections, the versioned saves and the outbox
run several such statements for every event of every deal, so `DirectStatement` sends
them as asyncpg prepared statements on the connection the unit of work already holds.

What stays SQLAlchemy's: the schema (a statement is an ordinary Core statement, compiled
once per set of parameter names by the engine's own dialect, with its own type
processing, so JSON, UUID and money go in and come out exactly as through
`connection.execute`); the transaction (begun by SQLAlchemy, and committed or rolled
back by it); and the errors: a driver error is translated as SQLAlchemy translates it
(`IntegrityError`, `OperationalError`, an invalidated connection on a disconnect), so
the retry, conflict and problem+json paths see no difference.

On SQLite, and on an engine whose statements are traced (one span per statement comes
from SQLAlchemy's events, which this path does not fire), a statement simply runs
through `connection.execute`.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable, sqltypes

from dealflow_common import one_write

_through_sqlalchemy: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Engines whose every statement must pass through SQLAlchemy (their statements are traced)."""

_statement_counters: weakref.WeakKeyDictionary[Engine, Callable[[], None]] = (
    weakref.WeakKeyDictionary()
)
"""What counts a statement this path sends, per engine (`db.count_statements`)."""


def run_through_sqlalchemy(engine: AsyncEngine) -> None:
    """Send every statement of `engine` through SQLAlchemy (its events trace them)."""
    _through_sqlalchemy.add(engine.sync_engine)


def count_direct_statements(engine: AsyncEngine, count: Callable[[], None]) -> None:
    """Call `count` for every statement sent directly on `engine`'s connections."""
    _statement_counters[engine.sync_engine] = count


class _Row:
    """Rows read directly: tuples that answer by column name, like SQLAlchemy's `Row`."""

    __slots__ = ()
    _fields: tuple[str, ...]

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))  # type: ignore[call-overload]


@dataclass(slots=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...]
    fixed: tuple[tuple[bool, Any], ...]
    """Per position: whether the value is a parameter of the run, else the value."""
    binds: tuple[Callable[[Any], Any] | None, ...]
    types: tuple[Any, ...]
    """The SQLAlchemy type of each column returned."""
    row: type | None
    writes: bool
    """Whether the statement may write (`one_write.writes`)."""
    results: list[tuple[tuple[int, Callable[[Any], Any]], ...]] = field(default_factory=list)
    """The dialect's processing of the columns returned that have one, by position, once
    known (`_results`)."""


class DirectStatement:
    """One Core statement, run directly on PostgreSQL. Build it once, at import."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[frozenset[str], _Compiled] = {}

    async def all(self, connection: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns (attribute access by column name)."""
        found = await self._driver_of(connection, params)
        if found is None:
            return list((await connection.execute(self.statement, dict(params))).all())
        driver, compiled = found
        records = await self._send(connection, driver, compiled, params, "fetch")
        row, results = compiled.row, compiled.results[0] if compiled.results else None
        assert row is not None, "the statement returns no rows"
        if results is None:
            results = await _results(connection, driver, compiled)
        if not results:
            return [row._make(record) for record in records]  # type: ignore[attr-defined]
        rows = []
        for record in records:
            # Only the columns that need it are processed (a third of a deal's row): the
            # rest are taken as the driver gave them.
            values = list(record)
            for index, process in results:
                values[index] = process(values[index])
            rows.append(row._make(values))  # type: ignore[attr-defined]
        return rows

    async def first(self, connection: AsyncConnection, params: Mapping[str, Any]) -> Any | None:
        """The first row, or None."""
        rows = await self.all(connection, params)
        return rows[0] if rows else None

    async def rowcount(self, connection: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        found = await self._driver_of(connection, params)
        if found is None:
            result = await connection.execute(self.statement, dict(params))
            return int(result.rowcount)
        driver, compiled = found
        status: str = await self._send(connection, driver, compiled, params, "execute")
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else -1

    async def each(self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (all with the same names): one set
        is one direct statement; several go as asyncpg's `executemany`, one round trip."""
        if len(rows) == 1:
            await self.rowcount(connection, rows[0])
            return
        if not rows:
            return
        found = await self._driver_of(connection, rows[0])
        if found is None:
            await connection.execute(self.statement, [dict(row) for row in rows])
            return
        driver, compiled = found
        arguments = [_arguments(compiled, row) for row in rows]
        # One statement, as SQLAlchemy counts an executemany.
        await _counted(connection, compiled.sql, arguments[0], driver.executemany, arguments)

    async def _driver_of(
        self, connection: AsyncConnection, params: Mapping[str, Any]
    ) -> tuple[Any, _Compiled] | None:
        """The asyncpg connection, its transaction begun if the statement needs one, and
        the statement compiled; None when it must go through SQLAlchemy (SQLite, a traced
        engine)."""
        if connection.dialect.name != "postgresql":
            return None
        if connection.sync_engine in _through_sqlalchemy:
            return None
        sync = connection.sync_connection
        if sync is None or sync.closed or sync.invalidated:
            return None  # SQLAlchemy raises or reconnects, as it does for any statement
        if not sync.in_transaction():
            # What `execute` would do (autobegin); SQLAlchemy then commits or rolls it back.
            await connection.begin()
        names = frozenset(params)
        compiled = self._compiled.get(names)
        if compiled is None:
            compiled = self._compiled[names] = _compile(self.statement, connection, names)
        adapted: Any = sync.connection.dbapi_connection
        if compiled.writes and one_write.in_one_write(sync):
            one_write.begin_before_write(adapted)
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, before the first statement it
        # runs; a direct statement may be the first, so it begins the same transaction the
        # same way (none in autocommit, as in a work's one-write mode).
        if adapted._transaction is None and not adapted.autocommit:
            try:
                await adapted._start_transaction()  # raises the driver's error in DBAPI form
            except Exception as error:
                raise await _wrapped(connection, "BEGIN", (), error) from error
        return adapted._connection, compiled

    async def _send(
        self,
        connection: AsyncConnection,
        driver: Any,
        compiled: _Compiled,
        params: Mapping[str, Any],
        method: str,
    ) -> Any:
        arguments = _arguments(compiled, params)
        return await _counted(
            connection, compiled.sql, arguments, getattr(driver, method), *arguments
        )


async def _counted(
    connection: AsyncConnection,
    sql: str,
    shown: Sequence[Any],
    call: Callable[..., Awaitable[Any]],
    *arguments: Any,
) -> Any:
    """`call(sql, *arguments)` on the driver, counted as one statement; its error is
    raised as SQLAlchemy would raise it (`shown`: the arguments the error names)."""
    count = _statement_counters.get(connection.sync_engine)
    if count is not None:
        count()
    try:
        return await call(sql, *arguments)
    except Exception as error:
        raise await _translated(connection, sql, shown, error) from error


def _arguments(compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
    """The positional arguments of one run, each processed as its type binds it."""
    arguments = []
    for name, (given, value), process in zip(
        compiled.positions, compiled.fixed, compiled.binds, strict=True
    ):
        if given:
            value = params[name]
        arguments.append(value if process is None else process(value))
    return arguments


def _compile(
    statement: Executable, connection: AsyncConnection, names: frozenset[str]
) -> _Compiled:
    dialect = connection.dialect
    # `column_keys` picks the columns an INSERT or UPDATE sets, as `execute` does from
    # the names of its parameters.
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(names))  # type: ignore[attr-defined]
    for name in compiled.positiontup or ():
        parameter = compiled.binds[name]
        given = name in names
        if parameter.callable is not None or (parameter.expanding and given):
            # A list given with each run (`in_(bindparam(..., expanding=True))`) renders one
            # placeholder per item, so the SQL would change with its length; a callable's
            # value is the run's. Bind one array instead (`column == any_(array)`).
            raise sa_exc.ArgumentError(f"{name}: a list or callable parameter cannot run directly")
        if not given and parameter.required:
            raise sa_exc.ArgumentError(f"a value is required for parameter {name!r}")
    # What the statement binds itself (`where(stage == "lead")`, `in_(["a", "b"])`) is the
    # same on every run: expanded and taken here once, as SQLAlchemy does on each run.
    # The others come from the parameters of each run.
    expanded = compiled.construct_expanded_state(dict.fromkeys(names))
    positions = tuple(expanded.positiontup or ())
    processors = {**compiled._bind_processors, **expanded.processors}
    for name in names:
        parameter = compiled.binds.get(name)
        if parameter is not None and _copies_only(parameter.type, dialect):
            processors.pop(name, None)
    columns = compiled._result_columns  # (key, name, objects, type) of each column returned
    fixed = tuple((name in names, expanded.parameters.get(name)) for name in positions)
    row = None
    if columns:
        fields = tuple(column[0] for column in columns)
        row = type("Row", (_Row, namedtuple("Row", fields, rename=True)), {"__slots__": ()})
    return _Compiled(
        sql=expanded.statement,
        positions=positions,
        fixed=fixed,
        binds=tuple(processors.get(name) for name in positions),
        types=tuple(column[3] for column in columns),
        row=row,
        writes=one_write.writes(expanded.statement),
    )


def _copies_only(type_: Any, dialect: Any) -> bool:
    """Whether SQLAlchemy's processing of this bind only copies the value: an ARRAY whose
    items the dialect binds as they are (text, UUID, integers). asyncpg encodes a list or
    tuple itself. The copy is small (0.35 µs an array on the bench machine), but every
    write with events binds eight arrays (`outbox.appended_after`)."""
    if not isinstance(type_, sqltypes.ARRAY):
        return False
    return type_.item_type.dialect_impl(dialect).bind_processor(dialect) is None


async def _results(
    connection: AsyncConnection, driver: Any, compiled: _Compiled
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """How the dialect processes each column, which for some types (NUMERIC) depends on
    the type the server names: asked once, from the statement prepared."""
    try:
        prepared = await driver.prepare(compiled.sql)
    except Exception as error:
        raise await _translated(connection, compiled.sql, (), error) from error
    oids = [attribute.type.oid for attribute in prepared.get_attributes()]
    processors = (
        type_._cached_result_processor(connection.dialect, oid)
        for type_, oid in zip(compiled.types, oids, strict=True)
    )
    results = tuple(
        (index, process) for index, process in enumerate(processors) if process is not None
    )
    compiled.results[:] = [results]
    return results


async def _translated(
    connection: AsyncConnection, sql: str, arguments: Sequence[Any], error: Exception
) -> Exception:
    """The exception SQLAlchemy would raise for the driver's `error` (`_wrapped`)."""
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    try:
        adapted._handle_exception(error)  # raises the driver error in DBAPI form
    except Exception as dbapi_error:
        return await _wrapped(connection, sql, arguments, dbapi_error)
    return error  # pragma: no cover - the adapter always raises


async def _wrapped(
    connection: AsyncConnection, sql: str, arguments: Sequence[Any], translated: Exception
) -> Exception:
    """SQLAlchemy's exception for a driver error in DBAPI form; on a lost connection the
    pool is invalidated as SQLAlchemy does, so it hands out none of its older connections."""
    dialect = connection.dialect
    if not isinstance(translated, dialect.loaded_dbapi.Error):
        return translated
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    disconnect = dialect.is_disconnect(translated, adapted, None)
    if disconnect:
        # As SQLAlchemy does on a disconnect: every connection the pool holds from before
        # is dropped at its next checkout (a database restart or a purge of its sessions
        # lost them all; found one by one, each would fail a request), then this one.
        sync = connection.sync_connection
        if sync is not None and sync._dbapi_connection is not None and not sync.invalidated:
            connection.sync_engine.pool._invalidate(sync._dbapi_connection, translated)
        await connection.invalidate(translated)
    wrapped: Exception = sa_exc.DBAPIError.instance(
        sql,
        tuple(arguments),
        translated,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
    return wrapped
