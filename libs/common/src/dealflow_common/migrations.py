"""Run a service's Alembic migrations against its schema (PostgreSQL) or file (SQLite).

Each service's `migrations/env.py` calls `configure_and_run`. The runner creates the
schema if needed and holds an advisory lock while migrating, so replicas started
together do not race each other through the same migration.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from dealflow_common.db import checked_schema_name, create_engine, is_postgres
from dealflow_common.messaging.outbox import hash_name
from dealflow_common.settings import ServiceSettings

_MIGRATION_LOCK_BASE = 0x0D_EA_1F_20


async def migrate(settings: ServiceSettings, script_location: Path) -> None:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            schema = None
            if is_postgres(connection):
                schema = checked_schema_name(settings.db_schema)
                # The request timeouts of the service's sessions do not apply here: a
                # migration may run long, and a replica waits on the lock below for as
                # long as another one migrates.
                await connection.execute(text("SET LOCAL statement_timeout = 0"))
                await connection.execute(text("SET LOCAL lock_timeout = 0"))
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _MIGRATION_LOCK_BASE ^ hash_name(schema)},
                )
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(_upgrade, script_location, schema)
    finally:
        await engine.dispose()


def run_migrations(settings: ServiceSettings, script_location: Path) -> None:
    asyncio.run(migrate(settings, script_location))


def _upgrade(connection: Connection, script_location: Path, schema: str | None) -> None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = schema
    command.upgrade(config, "head")


def configure_and_run(context: Any) -> None:
    """The body of every service's `migrations/env.py` (online mode only)."""
    if context.is_offline_mode():
        raise SystemExit("offline migrations are not supported; run `<service> migrate`")
    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        version_table_schema=attributes.get("version_table_schema"),
        target_metadata=None,
    )
    with context.begin_transaction():
        context.run_migrations()
