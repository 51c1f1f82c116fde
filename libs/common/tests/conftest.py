"""A throwaway SQLite database with the messaging tables, for the platform's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import create_engine
from dealflow_common.messaging.tables import create_messaging_tables
from dealflow_common.settings import ServiceSettings


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
