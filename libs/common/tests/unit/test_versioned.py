"""The versioned save writes over the version it read, or refuses; and the database
session settings (timeouts) are those configured."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import create_engine, postgres_timeouts
from dealflow_common.errors import NotFound, StaleVersion
from dealflow_common.settings import ServiceSettings
from dealflow_common.versioned import VersionedTable

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("version", Integer, nullable=False),
)
VERSIONED = VersionedTable(things, "thing")


def settings_for(path: Path, **extra: Any) -> ServiceSettings:
    return ServiceSettings(
        DATABASE_URL=f"sqlite+aiosqlite:///{path}",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET="x" * 32,
        **extra,
    )


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(tmp_path / "things.db"))
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def a_thing(engine: AsyncEngine, version: int = 1) -> uuid.UUID:
    thing_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(things.insert().values(id=thing_id, name="old", version=version))
    return thing_id


async def stored(engine: AsyncEngine, thing_id: uuid.UUID) -> tuple[str, int]:
    async with engine.connect() as connection:
        row = (await connection.execute(select(things).where(things.c.id == thing_id))).one()
    return row.name, row.version


async def test_a_save_over_the_version_read_is_written(database: AsyncEngine) -> None:
    thing_id = await a_thing(database)
    async with database.begin() as connection:
        await VERSIONED.save(connection, thing_id, 1, {"name": "new", "version": 2})
    assert await stored(database, thing_id) == ("new", 2)


async def test_a_save_leaves_the_unversioned_columns_as_they_are(database: AsyncEngine) -> None:
    """A column written without a new version (bookkeeping) is not the save's: writing
    back what the change read would undo whoever wrote it since."""
    thing_id = await a_thing(database)
    bookkeeping_left_alone = VersionedTable(things, "thing", unversioned=("name",))
    async with database.begin() as connection:
        await bookkeeping_left_alone.save(
            connection, thing_id, 1, {"name": "as read", "version": 2}
        )
    assert await stored(database, thing_id) == ("old", 2)
    assert bookkeeping_left_alone.columns == ["version"]


async def test_a_save_over_an_older_version_is_refused_and_writes_nothing(
    database: AsyncEngine,
) -> None:
    thing_id = await a_thing(database, version=3)
    async with database.begin() as connection:
        with pytest.raises(StaleVersion) as refused:
            await VERSIONED.save(connection, thing_id, 2, {"name": "lost", "version": 3})
    assert (refused.value.expected, refused.value.actual) == (2, 3)
    assert await stored(database, thing_id) == ("old", 3)


async def test_a_save_of_a_row_that_is_gone_is_not_found(database: AsyncEngine) -> None:
    async with database.begin() as connection:
        with pytest.raises(NotFound):
            await VERSIONED.save(connection, uuid.uuid4(), 1, {"name": "x", "version": 2})


async def test_sqlite_waits_for_a_writer_as_long_as_configured(tmp_path: Path) -> None:
    engine = create_engine(settings_for(tmp_path / "t.db", database_sqlite_busy_timeout_ms=1234))
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA busy_timeout")) == 1234
    finally:
        await engine.dispose()


def test_postgres_sessions_get_the_configured_timeouts(tmp_path: Path) -> None:
    configured = settings_for(
        tmp_path / "unused.db",
        database_statement_timeout_ms=1500,
        database_lock_timeout_ms=500,
        database_idle_in_transaction_timeout_ms=0,
    )
    assert postgres_timeouts(configured) == {
        "statement_timeout": "1500",
        "lock_timeout": "500",
        "idle_in_transaction_session_timeout": "0",
    }


entries_metadata = MetaData()
moved_things = Table(
    "moved_things",
    entries_metadata,
    Column("id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("version", Integer, nullable=False),
)
thing_moves = Table(
    "thing_moves",
    entries_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thing_id", Uuid, nullable=False),
    Column("to_stage", String(20), nullable=False),
)
MOVES = VersionedTable(moved_things, "thing").with_entry(thing_moves, "thing_id")


async def test_a_save_with_its_entry_writes_both_or_neither(both_engines: AsyncEngine) -> None:
    """A stage move and its history entry in one statement (two on SQLite): the entry
    is added only when the row was saved at the version read."""
    async with both_engines.begin() as connection:
        await connection.run_sync(entries_metadata.create_all)
        thing_id = uuid.uuid4()
        await connection.execute(moved_things.insert().values(id=thing_id, stage="lead", version=1))

    async def moves() -> list[tuple[str, str, int]]:
        async with both_engines.connect() as connection:
            rows = await connection.execute(
                select(moved_things.c.stage, thing_moves.c.to_stage, moved_things.c.version)
                .join(moved_things, moved_things.c.id == thing_moves.c.thing_id)
                .order_by(thing_moves.c.id)
            )
            return [tuple(row) for row in rows]

    async with both_engines.begin() as connection:
        await MOVES.save(
            connection, thing_id, 1, {"stage": "proposal", "version": 2}, {"to_stage": "proposal"}
        )
    assert await moves() == [("proposal", "proposal", 2)]
    async with both_engines.begin() as connection:
        with pytest.raises(StaleVersion) as stale:
            await MOVES.save(
                connection, thing_id, 1, {"stage": "won", "version": 2}, {"to_stage": "won"}
            )
        assert stale.value.actual == 2
        with pytest.raises(NotFound):
            await MOVES.save(
                connection, uuid.uuid4(), 1, {"stage": "won", "version": 2}, {"to_stage": "won"}
            )
    assert await moves() == [("proposal", "proposal", 2)]
