"""Fixtures every test tier shares: the database, the broker, tokens.

See `dealflow_common.testing` for how PostgreSQL and Kafka are found. `databases` is
parametrized over `BACKENDS`, so every test that uses it (the component tests) runs on
PostgreSQL and on SQLite. A test about something only PostgreSQL does narrows it with
`@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)` and says why.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from dealflow_common.auth import mint_token
from dealflow_common.testing import (
    BACKENDS,
    ComponentDatabases,
    KafkaEndpoint,
    drop_schemas,
    kafka_endpoint,
    postgres_url,
)

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_url() as url:
        yield url


@pytest.fixture(scope="session")
async def schemas(database_url: str) -> AsyncIterator[list[str]]:
    """Schemas created during the session; dropped at its end."""
    created: list[str] = []
    yield created
    await drop_schemas(database_url, created)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def databases(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> ComponentDatabases:
    """Fresh, migrated databases for the services under test, on `backend`."""
    directory = tmp_path_factory.mktemp(f"databases-{backend}")
    if backend != "postgresql":
        return ComponentDatabases(backend, directory)
    # Asked for here only, so that the SQLite run does not start a PostgreSQL container.
    url = request.getfixturevalue("database_url")
    schemas = request.getfixturevalue("schemas")
    return ComponentDatabases(backend, directory, url, schemas)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaEndpoint]:
    with kafka_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return JWT_SECRET


@pytest.fixture(scope="session")
def token() -> Callable[..., str]:
    """`token(sub, roles=..., teams=...)` mints a bearer token the services accept."""

    def mint(
        sub: str = "alice", roles: tuple[str, ...] = ("rep",), teams: tuple[str, ...] = ()
    ) -> str:
        return mint_token(
            JWT_SECRET, sub=sub, roles=list(roles), teams=list(teams), now=int(time.time())
        )

    return mint
