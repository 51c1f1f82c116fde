"""A work's connection and a reader's go back to the pool as they came, whatever happens:
they are opened and closed through SQLAlchemy's synchronous connection, not
`AsyncConnection`'s own `async with`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
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


def options_of(connection: AsyncConnection) -> dict[str, Any]:
    assert connection.sync_connection is not None
    return dict(connection.sync_connection.get_execution_options())


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


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
@pytest.mark.parametrize("one_write", [False, True])
async def test_a_commit_refused_by_the_database_stores_nothing_and_gives_the_connection_back(
    engine: AsyncEngine, one_write: bool
) -> None:
    """Refused at COMMIT itself (a deferred constraint): the error is the commit's, and
    the connection returns to the pool in transactions, out of one-write mode."""
    table = f"conn_deferred_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            f"CREATE TABLE {table} (name text, "
            f"CONSTRAINT {table}_once UNIQUE (name) DEFERRABLE INITIALLY DEFERRED)"
        )

    async def twice() -> None:
        async with work(engine).one_write(one_write) as uow:
            await uow.connection.exec_driver_sql(f"INSERT INTO {table} VALUES ('twice')")
            await uow.connection.exec_driver_sql(f"INSERT INTO {table} VALUES ('twice')")
            await uow.commit()

    with pytest.raises(IntegrityError, match=f"{table}_once"):
        await twice()
    assert checked_out(engine) == 0
    async with work(engine) as uow:
        rows = await uow.connection.exec_driver_sql(f"SELECT count(*) FROM {table}")
        assert rows.scalar_one() == 0
        assert driver_of(uow.connection).autocommit is False


async def test_a_reader_reads_without_a_transaction_and_leaves_none_behind(
    engine: AsyncEngine,
) -> None:
    async with reading(engine) as connection:
        assert options_of(connection).get("dealflow_read_only") is True
        if is_postgres(engine):  # its statements run in autocommit: no BEGIN, no ROLLBACK
            assert driver_of(connection).autocommit is True
        assert await connection.scalar(select(1)) == 1
        assert checked_out(engine) == 1
    assert checked_out(engine) == 0
    # The pooled connection comes back to the next user as an ordinary one.
    async with engine.connect() as connection:
        assert "dealflow_read_only" not in options_of(connection)
        if is_postgres(engine):
            assert driver_of(connection).autocommit is False


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_cancelled_reader_gives_its_connection_back(engine: AsyncEngine) -> None:
    started = asyncio.Event()

    async def read_forever() -> None:
        async with reading(engine) as connection:
            started.set()
            await connection.exec_driver_sql("SELECT pg_sleep(30)")

    task = asyncio.create_task(read_forever())
    await started.wait()
    await asyncio.sleep(0.05)
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
