"""A work's connection and a reader's go back to the pool as they came, whatever happens:
they are opened and closed through SQLAlchemy's synchronous connection, not
`AsyncConnection`'s own `async with`."""

from __future__ import annotations

import asyncio
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
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


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
