"""The opportunity API on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.testing import ComponentDatabases, ServiceUnderTest, service_under_test
from dealflow_opportunity.adapters.tables import (
    assignment_history,
    notes,
    opportunities,
    opportunity_owners,
    sales_history,
)
from dealflow_opportunity.bootstrap import MIGRATIONS, OpportunitySettings, build_app


class Api(ServiceUnderTest):
    async def open(self, **overrides: Any) -> dict[str, Any]:
        response = await self.opening(**overrides)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def opening(self, **overrides: Any) -> httpx.Response:
        """The response to opening a deal (`open`'s body, with `overrides`), whatever it is."""
        body: dict[str, Any] = {
            "title": "Fleet renewal",
            "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
            "value": {"amount": "50000.00", "currency": "USD"},
        }
        user = overrides.pop("user", "alice")
        roles = overrides.pop("roles", ("rep",))
        teams = overrides.pop("teams", ("emea",))
        body.update(overrides)
        return await self.call("POST", "/opportunities", body, user=user, roles=roles, teams=teams)

    async def written(self) -> dict[str, int]:
        return await self.row_counts(
            opportunities, opportunity_owners, sales_history, notes, assignment_history
        )


@pytest.fixture(scope="module")
async def api(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[Api]:
    settings = databases.settings(OpportunitySettings, jwt_secret)
    async with service_under_test(
        Api, settings, build_app, MIGRATIONS, token, [OPPORTUNITY_EVENTS]
    ) as service:
        yield service
