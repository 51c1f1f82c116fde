"""The order service on a real PostgreSQL schema of its own (migrated), no broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from dealflow_common.contracts.topics import ORDER_EVENTS
from dealflow_common.testing import (
    ServiceUnderTest,
    new_schema_name,
    service_under_test,
    settings_for,
)
from dealflow_order.bootstrap import MIGRATIONS, OrderSettings, build_app


@pytest.fixture(scope="module")
async def service(
    database_url: str, schemas: list[str], token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[ServiceUnderTest]:
    schema = new_schema_name("order")
    schemas.append(schema)
    settings = settings_for(OrderSettings, database_url, jwt_secret, database_schema=schema)
    async with service_under_test(
        ServiceUnderTest, settings, build_app, MIGRATIONS, token, [ORDER_EVENTS]
    ) as order_service:
        yield order_service
