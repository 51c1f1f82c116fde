"""Fixtures every test tier shares: the database, the broker, tokens.

See `dealflow_common.testing` for how PostgreSQL and Kafka are found.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from dealflow_common.auth import mint_token
from dealflow_common.testing import KafkaEndpoint, drop_schemas, kafka_endpoint, postgres_url

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
