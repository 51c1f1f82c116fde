"""The order service on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from dealflow_common.contracts.topics import ORDER_EVENTS
from dealflow_common.testing import ComponentDatabases, ServiceUnderTest, service_under_test
from dealflow_order.bootstrap import MIGRATIONS, OrderSettings, build_app


@pytest.fixture(scope="module")
async def service(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[ServiceUnderTest]:
    settings = databases.settings(OrderSettings, jwt_secret)
    async with service_under_test(
        ServiceUnderTest, settings, build_app, MIGRATIONS, token, [ORDER_EVENTS]
    ) as order_service:
        yield order_service
