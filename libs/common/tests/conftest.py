"""A throwaway database with the messaging tables, for the platform's tests.

`engine` is SQLite; `both_engines` runs a test on SQLite and on PostgreSQL (a schema of
its own on the local server, dropped after), for code with a path per dialect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import create_engine
from dealflow_common.messaging.tables import create_messaging_tables
from dealflow_common.settings import ServiceSettings
from dealflow_common.testing import BACKENDS, drop_schemas, new_schema_name, postgres_url


def sqlite_settings(path: Path) -> ServiceSettings:
    return ServiceSettings(
        DATABASE_URL=f"sqlite+aiosqlite:///{path}",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET="x" * 32,
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_settings(tmp_path / "messaging.db"))
    async with engine.begin() as connection:
        await connection.run_sync(create_messaging_tables)
    yield engine
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def both_engines(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        settings = sqlite_settings(tmp_path / "messaging.db")
        schema = None
    else:
        schema = new_schema_name("common")
        with postgres_url() as url:
            settings = ServiceSettings(
                DATABASE_URL=url,
                database_schema=schema,
                KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                DEALFLOW_JWT_SECRET="x" * 32,
            )
    engine = create_engine(settings)
    if schema is not None:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    async with engine.begin() as connection:
        await connection.run_sync(create_messaging_tables)
    yield engine
    await engine.dispose()
    if schema is not None:
        await drop_schemas(settings.database_url, [schema])
