"""A work's connection and a reader's go back to the pool as they came, whatever happens:
they are opened and closed through SQLAlchemy's synchronous connection, not
`AsyncConnection`'s own `async with`. On PostgreSQL a work's connection that ended
cleanly is kept for the next work (`pool`), which never makes anyone else wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.db import is_postgres, reading
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.uow import UnitOfWork

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

metadata = MetaData()
claims = Table(
    "conn_claims",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(40), nullable=False),
)


@pytest.fixture
async def engine(both_engines: AsyncEngine) -> AsyncEngine:
    async with both_engines.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return both_engines


def checked_out(engine: AsyncEngine) -> int:
    """Connections in use: checked out of the pool and not kept for the next work
    (`pool.KeepingPool`, PostgreSQL)."""
    pool: Any = engine.sync_engine.pool
    in_use: int = pool.checkedout() - len(getattr(pool, "kept", []))
    return in_use


def kept(engine: AsyncEngine) -> list[Any]:
    """The driver connections works keep, oldest first."""
    pool: Any = engine.sync_engine.pool
    return [c.connection.driver_connection for c in getattr(pool, "kept", [])]


def driver_of(connection: AsyncConnection) -> Any:
    """SQLAlchemy's adapter of the driver's connection (it holds the autocommit flag)."""
    assert connection.sync_connection is not None
    return connection.sync_connection.connection.dbapi_connection


def work(engine: AsyncEngine) -> UnitOfWork:
    return UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW)


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(claims.c.name))).scalars())


async def test_a_work_gives_its_connection_back_as_it_commits(engine: AsyncEngine) -> None:
    async with work(engine) as uow:
        await uow.connection.execute(claims.insert().values(name="kept"))
        assert checked_out(engine) == 1
        await uow.commit()
        assert checked_out(engine) == 0
    assert await names(engine) == ["kept"]


async def test_a_work_that_fails_stores_nothing_and_gives_its_connection_back(
    engine: AsyncEngine,
) -> None:
    async def failing() -> None:
        async with work(engine) as uow:
            await uow.connection.execute(claims.insert().values(name="lost"))
            raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError):
        await failing()
    assert checked_out(engine) == 0
    assert await names(engine) == []


async def test_a_work_commits_once(engine: AsyncEngine) -> None:
    async def commit_twice() -> None:
        async with work(engine) as uow:
            await uow.connection.execute(claims.insert().values(name="once"))
            await uow.commit()
            await uow.commit()

    with pytest.raises(RuntimeError, match="already committed"):
        await commit_twice()
    assert await names(engine) == ["once"]


async def test_a_commit_refused_by_the_database_stores_nothing_and_frees_the_connection(
    engine: AsyncEngine,
) -> None:
    """Refused at COMMIT itself (a deferred foreign key): the error is the commit's, and
    the connection goes back to the pool with no transaction left on it. On SQLite such
    a transaction would hold the write lock: the next work could not begin."""
    child = f"conn_child_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            f"CREATE TABLE {child} (claim_id INTEGER REFERENCES conn_claims (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )

    async def orphan() -> None:
        async with work(engine) as uow:
            await uow.connection.exec_driver_sql(f"INSERT INTO {child} VALUES (404)")
            await uow.commit()

    with pytest.raises(IntegrityError):
        await orphan()
    assert checked_out(engine) == 0
    async with work(engine) as uow:
        await uow.connection.execute(claims.insert().values(name="next"))
        await uow.commit()
    assert await names(engine) == ["next"]
    async with engine.connect() as connection:
        orphans = await connection.exec_driver_sql(f"SELECT count(*) FROM {child}")
        assert orphans.scalar_one() == 0


async def test_a_reader_reads_without_a_transaction_of_its_own(engine: AsyncEngine) -> None:
    """On PostgreSQL in autocommit (no BEGIN, no ROLLBACK); on SQLite in a plain BEGIN
    that does not wait for a writer holding the write lock."""
    async with work(engine) as writer:
        await writer.connection.execute(claims.insert().values(name="not yet"))
        async with asyncio.timeout(10), reading(engine) as connection:
            if is_postgres(engine):
                assert driver_of(connection).autocommit is True
            assert await connection.scalar(select(func.count()).select_from(claims)) == 0
            assert checked_out(engine) == 2
    assert checked_out(engine) == 0
    # The pooled connection comes back to the next user out of autocommit.
    async with engine.connect() as connection:
        if is_postgres(engine):
            assert driver_of(connection).autocommit is False


async def test_a_reader_cancelled_while_it_holds_its_connection_gives_it_back(
    engine: AsyncEngine,
) -> None:
    started = asyncio.Event()

    async def read_then_wait() -> None:
        async with reading(engine) as connection:
            await connection.scalar(select(1))
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(read_then_wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_out(engine) == 0


async def test_a_reader_gives_its_connection_back_when_its_read_fails(
    engine: AsyncEngine,
) -> None:
    async def read_what_is_not_there() -> None:
        async with reading(engine) as connection:
            await connection.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(DBAPIError, match="no_such_table"):
        await read_what_is_not_there()
    assert checked_out(engine) == 0
    async with reading(engine) as connection:
        assert await connection.scalar(select(1)) == 1


ON_POSTGRES = pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
"""Connections are kept between works on PostgreSQL only."""


async def committed(engine: AsyncEngine, name: str) -> Any:
    """A work that stores `name`; the driver connection it ran on."""
    async with work(engine) as uow:
        await uow.connection.execute(claims.insert().values(name=name))
        used = driver_of(uow.connection)._connection
        await uow.commit()
    return used


async def every_connection_in_a_work(
    engine: AsyncEngine, size: int
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """`size` works, each holding a connection with a row written, until the event is
    set; returned once every one holds its connection."""
    gate, all_started = asyncio.Event(), asyncio.Event()
    started = 0

    async def held_work(name: str) -> None:
        nonlocal started
        async with work(engine) as uow:
            await uow.connection.execute(claims.insert().values(name=name))
            started += 1
            if started == size:
                all_started.set()
            await gate.wait()
            await uow.commit()

    works = [asyncio.create_task(held_work(f"w{n}")) for n in range(size)]
    await all_started.wait()
    return gate, works


@ON_POSTGRES
async def test_the_next_work_runs_on_the_connection_the_last_one_kept(engine: AsyncEngine) -> None:
    first = await committed(engine, "one")
    assert kept(engine) == [first]
    assert await committed(engine, "two") is first

    # A work refused and rolled back leaves its connection fit too: it is kept.
    async def refused() -> None:
        async with work(engine) as uow:
            await uow.connection.execute(claims.insert().values(name="lost"))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await refused()
    assert kept(engine) == [first]
    assert await names(engine) == ["one", "two"]
    # And a kept connection comes to the next work in transactions, out of autocommit.
    async with work(engine) as uow:
        assert driver_of(uow.connection).autocommit is False
        assert uow.connection.in_transaction()
        await uow.commit()


@ON_POSTGRES
async def test_a_connection_lost_during_a_work_is_not_kept(engine: AsyncEngine) -> None:
    async def lost() -> None:
        async with work(engine) as uow:
            await uow.connection.execute(claims.insert().values(name="lost"))
            await uow.connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(DBAPIError):
        await lost()
    assert kept(engine) == []
    assert checked_out(engine) == 0
    assert await committed(engine, "after") is not None
    assert await names(engine) == ["after"]


@ON_POSTGRES
async def test_kept_connections_never_make_anyone_wait(engine: AsyncEngine) -> None:
    """Every connection of the pool kept by works at once: whoever asks the pool for one
    (the relay's lock, a stamp) still gets one at once, not after the pool's timeout."""
    size = engine.sync_engine.pool.size()  # type: ignore[attr-defined]
    gate, works = await every_connection_in_a_work(engine, size)
    gate.set()
    await asyncio.gather(*works)
    assert len(kept(engine)) == size
    async with asyncio.timeout(5), engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(claims)) == size
    assert len(kept(engine)) == size - 1


@ON_POSTGRES
async def test_a_work_ending_while_someone_waits_gives_its_connection_to_them(
    engine: AsyncEngine,
) -> None:
    """Every connection in use by works, and a reader waiting for one: the first work to
    end hands its connection over instead of keeping it."""
    size = engine.sync_engine.pool.size()  # type: ignore[attr-defined]
    gate, works = await every_connection_in_a_work(engine, size)

    async def read() -> int:
        async with reading(engine) as connection:
            count = await connection.scalar(select(func.count()).select_from(claims))
            assert count is not None
            return count

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)  # the reader waits on the pool
    assert not reader.done()
    gate.set()
    async with asyncio.timeout(5):
        # It reads once the first work has committed, whichever the others have.
        assert 1 <= await reader <= size
        await asyncio.gather(*works)
    assert len(await names(engine)) == size


@ON_POSTGRES
async def test_a_reader_runs_on_a_kept_connection_in_autocommit_and_gives_it_back(
    engine: AsyncEngine,
) -> None:
    first = await committed(engine, "one")
    async with reading(engine) as connection:
        assert driver_of(connection)._connection is first
        assert driver_of(connection).autocommit is True
        assert await connection.scalar(select(func.count()).select_from(claims)) == 1
    assert kept(engine) == [first]
    async with work(engine) as uow:
        assert driver_of(uow.connection).autocommit is False
        await uow.connection.execute(claims.insert().values(name="two"))
        await uow.commit()
    assert await names(engine) == ["one", "two"]


@ON_POSTGRES
async def test_a_kept_connection_older_than_the_pools_invalidation_is_replaced(
    engine: AsyncEngine,
) -> None:
    old = await committed(engine, "before")
    # What a database restart seen on another connection does: every connection
    # opened before it is replaced at its next use.
    pool: Any = engine.sync_engine.pool
    pool._invalidate_time = time.time() + 1
    new = await committed(engine, "after")
    assert new is not old
    assert old.is_closed()


@ON_POSTGRES
async def test_a_kept_connection_the_server_closed_is_replaced(engine: AsyncEngine) -> None:
    """A backend terminated while its connection was kept (a database restart does the
    same to all of them): the next work does not fail on it."""
    old = await committed(engine, "before")
    async with engine.connect() as connection:
        await connection.execute(select(func.pg_terminate_backend(old.get_server_pid())))
    async with asyncio.timeout(5):
        while not old.is_closed():  # noqa: ASYNC110 - the driver's own state, no event
            await asyncio.sleep(0.01)
    new = await committed(engine, "after")
    assert new is not old
    assert await names(engine) == ["before", "after"]


@ON_POSTGRES
async def test_a_work_cannot_reach_its_connection_once_given_back(engine: AsyncEngine) -> None:
    """Kept, it may be another work's by then."""
    async with work(engine) as uow:
        await uow.connection.execute(claims.insert().values(name="one"))
        await uow.commit()
        with pytest.raises(Exception, match="has not been started"):
            await uow.connection.execute(select(1))
        with pytest.raises(Exception, match="has not been started"):
            await uow.rollback()
    assert await names(engine) == ["one"]


@ON_POSTGRES
async def test_a_connection_whose_options_changed_is_not_kept(engine: AsyncEngine) -> None:
    """The pool's checkin would reset them; a kept connection skips it."""
    async with work(engine) as uow:
        await uow.connection.execution_options(logging_token="audit")
        await uow.connection.execute(claims.insert().values(name="one"))
        await uow.commit()
    assert kept(engine) == []
    assert checked_out(engine) == 0


@ON_POSTGRES
async def test_a_work_running_while_the_engine_is_disposed_of_keeps_nothing(
    engine: AsyncEngine,
) -> None:
    """Its connection belongs to the pool disposed of: it goes back there, not into the
    new pool's kept ones."""
    async with work(engine) as uow:
        await uow.connection.execute(claims.insert().values(name="one"))
        await engine.dispose()
        await uow.commit()
    assert kept(engine) == []
    assert await names(engine) == ["one"]


@ON_POSTGRES
async def test_disposing_of_the_engine_closes_the_kept_connections(engine: AsyncEngine) -> None:
    first = await committed(engine, "one")
    await engine.dispose()
    assert first.is_closed()
    assert kept(engine) == []
