"""Each service's migrations build exactly the schema its code queries, on both
PostgreSQL and SQLite: a table changed without a migration fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from dealflow_common.db import create_engine
from dealflow_common.messaging.tables import messaging_metadata
from dealflow_common.migrations import migrate
from dealflow_common.runtime.processes import installed_services, owns_database, service_module
from dealflow_common.testing import new_schema_name, settings_for

SERVICES = sorted(name for name, cls in installed_services().items() if owns_database(cls))


def expected_metadata(module: str) -> MetaData:
    tables = importlib.import_module(f"{module}.adapters.tables")
    combined = MetaData()
    for table in (*tables.metadata.sorted_tables, *messaging_metadata.sorted_tables):
        table.to_metadata(combined)
    return combined


def _mapped_by_sqlalchemy(name: str | None, type_: str, parent_names: Any) -> bool:
    # SQLite FTS5 search tables (`<name>_fts` and its shadow tables `<name>_fts_*`) are
    # virtual tables that SQLAlchemy cannot map; their migration creates them.
    return not (type_ == "table" and name is not None and re.search(r"_fts(_\w+)?$", name))


async def differences(settings: Any, module: str) -> list[Any]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:

            def compare(sync_connection: Any) -> list[Any]:
                context = MigrationContext.configure(
                    sync_connection,
                    opts={"compare_type": True, "include_name": _mapped_by_sqlalchemy},
                )
                return list(compare_metadata(context, expected_metadata(module)))

            return [
                d
                for d in await connection.run_sync(compare)
                # alembic_version is the migrations' own bookkeeping
                if not (d[0] == "remove_table" and d[1].name == "alembic_version")
            ]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_build_the_schema_the_code_uses_on_postgresql(
    service, database_url, schemas, jwt_secret
) -> None:
    settings_class = installed_services()[service]
    module = service_module(settings_class)
    schema = new_schema_name(service)
    schemas.append(schema)
    settings = settings_for(settings_class, database_url, jwt_secret, database_schema=schema)
    bootstrap = importlib.import_module(f"{module}.bootstrap")
    await migrate(settings, bootstrap.MIGRATIONS)
    await migrate(settings, bootstrap.MIGRATIONS)  # a second run changes nothing
    assert await differences(settings, module) == []


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_build_the_schema_the_code_uses_on_sqlite(
    service, tmp_path: Path, jwt_secret
) -> None:
    settings_class = installed_services()[service]
    module = service_module(settings_class)
    url = f"sqlite+aiosqlite:///{tmp_path / service}.db"
    settings = settings_for(settings_class, url, jwt_secret)
    bootstrap = importlib.import_module(f"{module}.bootstrap")
    await migrate(settings, bootstrap.MIGRATIONS)
    assert await differences(settings, module) == []
