"""Database engines: PostgreSQL through asyncpg, SQLite through aiosqlite.

On PostgreSQL each service owns one schema, selected through `search_path`, so the same
unqualified tables and migrations serve every deployment; every session has a statement,
lock and idle-in-transaction timeout. On SQLite each service has its own file; writers
start with `BEGIN IMMEDIATE` so that two concurrent transactions queue on the busy
timeout instead of failing when the second one tries to write, and reads (connections
given `READ_ONLY`) start with a plain `BEGIN`, so they never wait for a writer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    Numeric,
    String,
    TypeDecorator,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import greenlet_spawn

from dealflow_common.direct import count_direct_statements
from dealflow_common.metrics import LoopCounter
from dealflow_common.pool import KeepingPool, give_back, kept_at_once, take_kept, take_kept_at_once
from dealflow_common.settings import ServiceSettings

# Autoincrementing 64-bit ids; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

READ_ONLY = {"dealflow_read_only": True}
"""Execution options for a connection that only reads (plain `BEGIN` on SQLite)."""


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of `engine` that only reads, for `async with`.

    On PostgreSQL its statements run in autocommit: at READ COMMITTED a transaction gives
    a series of reads nothing (each statement takes its own snapshot anyway), and its
    BEGIN and ROLLBACK were two of every read's three round trips. On SQLite a plain
    `BEGIN` keeps one snapshot for the whole read and never waits for the writer.
    """
    if is_postgres(engine):
        async with in_autocommit(engine) as connection:
            yield connection
        return
    async with connected(engine, **READ_ONLY) as connection:
        yield connection


@asynccontextmanager
async def in_autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """PostgreSQL: a connection whose statements each commit by themselves (a read), for
    `async with`.

    It is a connection a unit of work kept (`pool`), or a pooled one, put in autocommit
    on SQLAlchemy's asyncpg adapter as a work's one-write mode does, rather than through
    the `isolation_level` option, whose setting and reset at the pool are most of a
    read's bookkeeping. Given back out of autocommit; kept for the next work or reader
    if its use ended cleanly, else closed.
    """
    # A kept connection is taken and given back without waiting on anything, so
    # without a hop into SQLAlchemy's greenlet (`uow`); any other way takes one.
    sync = take_kept_at_once(engine.sync_engine)
    if sync is None:
        sync = await greenlet_spawn(_autocommit_connect, engine.sync_engine)
    else:
        _set_autocommit(sync, True)
    clean = False
    connection = AsyncConnection(engine, sync)
    try:
        yield connection
        clean = True
    finally:
        connection.sync_connection = None  # given back: a later use raises
        if clean and kept_at_once(sync):
            _autocommit_release(sync, clean)
        else:
            await _to_completion(greenlet_spawn(_autocommit_release, sync, clean))


def _autocommit_connect(engine: Engine) -> Connection:
    connection = take_kept(engine) or engine.connect()
    _set_autocommit(connection, True)
    return connection


def _set_autocommit(connection: Connection, on: bool) -> None:
    connection.connection.dbapi_connection.autocommit = on  # type: ignore[union-attr]


def _autocommit_release(connection: Connection, clean: bool) -> None:
    try:
        if connection.in_transaction():
            # SQLAlchemy's own (autobegun) transaction: in autocommit the driver has
            # nothing open, so nothing is sent.
            connection.rollback()
        if not connection.invalidated:
            _set_autocommit(connection, False)
    except BaseException:
        connection.close()
        raise
    give_back(connection, clean)


@asynccontextmanager
async def connected(engine: AsyncEngine, **options: Any) -> AsyncIterator[AsyncConnection]:
    """`engine.connect()` with execution `options`, for `async with`.

    Opened and closed through SQLAlchemy's synchronous `Connection`, one hop into it
    (`greenlet_spawn`) each way: `AsyncConnection` takes one for its start, one for the
    options and one for its close, with their bookkeeping, and a read, a relay cycle or a
    readiness check runs nothing else there.
    """
    sync = await greenlet_spawn(_connect, engine.sync_engine, options)
    try:
        yield AsyncConnection(engine, sync)
    finally:
        await _to_completion(greenlet_spawn(sync.close))


async def _to_completion(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run `cleanup` to its end even if the caller is cancelled meanwhile, then raise the
    cancellation: as `AsyncConnection`'s own `async with` closes its connection, so that
    a cancelled request still gives its connection back, and not later, into a pool that
    may have been disposed of by then."""
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.done():
                raise
            cancelled = error
        else:
            break
    if cancelled is not None:
        raise cancelled


def _connect(engine: Engine, options: dict[str, Any]) -> Connection:
    connection = engine.connect()
    if options:
        try:
            connection.execution_options(**options)
        except BaseException:
            connection.close()
            raise
    return connection


def is_postgres(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "postgresql"


def checked_schema_name(name: str) -> str:
    # The name is interpolated into DDL and search_path, so it must be a plain identifier.
    if not _SCHEMA_NAME.match(name):
        raise ValueError(f"invalid database schema name {name!r}")
    return name


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    url = make_url(settings.database_url)
    backend = url.get_backend_name()
    if backend == "postgresql":
        schema = checked_schema_name(settings.db_schema)
        return create_async_engine(
            url,
            echo=settings.database_echo,
            pool_size=settings.database_pool_size,
            max_overflow=0,
            # Units of work keep their connections between works (`pool`).
            poolclass=KeepingPool,
            # No pre-ping: it costs a round trip on every checkout. After a database
            # restart the first statement on a stale connection fails, SQLAlchemy then
            # drops the whole pool, and consumers retry; a request may see one 500.
            pool_recycle=1800,
            # JSON and JSONB columns (owners, shares, applied sequences, ...) are written and
            # read on every save and load: orjson does it in a fraction of `json`'s time,
            # and the server stores the same value (JSONB keeps no spacing).
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
            connect_args={
                "connection_class": CountingConnection,
                # Room for every statement a service runs: past the default 100 the
                # least recently used is prepared again (a round trip) on its next use.
                "prepared_statement_cache_size": 500,
                "server_settings": {
                    "search_path": schema,
                    "application_name": f"dealflow-{settings.service_name}",
                    **postgres_timeouts(settings),
                },
            },
        )
    if backend == "sqlite":
        busy_ms = settings.database_sqlite_busy_timeout_ms
        engine = create_async_engine(
            url, echo=settings.database_echo, connect_args={"timeout": busy_ms / 1000}
        )
        _configure_sqlite(engine, busy_ms)
        return engine
    raise ValueError(
        f"unsupported database {backend!r}: use postgresql+asyncpg or sqlite+aiosqlite"
    )


def _json_text(value: Any) -> str:
    """A JSON column's value as text, as `json.dumps` would give it (keys that are not
    strings become strings), without its spaces."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def postgres_timeouts(settings: ServiceSettings) -> dict[str, str]:
    """Session settings that bound how long one request can hold or wait for the database.

    Without them a stuck statement or a lock held by a forgotten transaction makes every
    request behind it wait until the client gives up, each holding a pooled connection.
    """
    return {
        "statement_timeout": str(settings.database_statement_timeout_ms),
        "lock_timeout": str(settings.database_lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(
            settings.database_idle_in_transaction_timeout_ms
        ),
    }


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so `begin` below decides how it starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("dealflow_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class ExactDecimal(TypeDecorator[Decimal]):
    """Money amounts: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC is a float)."""

    impl = Numeric(24, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(24, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC. SQLite keeps no offset, so values read back are made aware again."""

    impl = DateTime(timezone=True)
    cache_ok = True

    # A moment already in UTC (the clock's, the driver's) is passed as it is: a new copy
    # of it for every timestamp written or read was most of this type's cost.

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC moment is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
"""A JSON column: JSONB on PostgreSQL (indexable), JSON text on SQLite."""


def count_statements(engine: AsyncEngine, registry: CollectorRegistry) -> None:
    """Count the statements and commits this process sends (`make bench` reports them
    per deal, per service: the cheapest statement is the one not sent), and on PostgreSQL
    the BEGIN, COMMIT and ROLLBACK sent around them, on every connection the engine
    opens from now on (the platform counts from its first)."""
    statements = LoopCounter(
        "dealflow_db_statements",
        "SQL statements executed (executemany counts once)",
        registry=registry,
    )
    commits = LoopCounter("dealflow_db_commits", "Transactions committed", registry=registry)

    def on_statement(*_: Any) -> None:
        statements.inc()

    def on_commit(*_: Any) -> None:
        commits.inc()

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    count_direct_statements(engine, statements.inc)
    event.listen(engine.sync_engine, "commit", on_commit)
    # Registered on SQLite too, so that dashboards find it on every back end; it stays at
    # 0 there: SQLite's BEGIN goes out as a statement (`_configure_sqlite`) and is counted
    # among them, and its COMMIT is a call into the library, not a round trip.
    controls = LoopCounter(
        "dealflow_db_transaction_statements",
        "BEGIN, COMMIT and ROLLBACK sent (PostgreSQL): round trips beside the statements",
        registry=registry,
    )
    if is_postgres(engine):

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            driver = dbapi_connection.driver_connection
            # Not `isinstance`: asyncpg's metaclass takes any of its connections for one.
            if issubclass(type(driver), CountingConnection):
                driver.on_transaction_statement = controls.inc


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


class CountingConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, counting the transaction control statements it sends.

    SQLAlchemy's adapter begins, commits and rolls back through asyncpg's `Transaction`,
    which sends each as a statement of its own (`execute` with no arguments), not through
    the cursor whose statements `count_statements` sees. Each is a round trip all the
    same: a work that is not in one-write mode costs two more than its statements."""

    on_transaction_statement: Callable[[], None] | None = None

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        count = self.on_transaction_statement
        if (
            count is not None
            and not args
            and query.lstrip().upper().startswith(_TRANSACTION_CONTROL)
        ):
            count()
        result: str = await super().execute(query, *args, timeout=timeout)
        return result
