"""The opportunity API on a real PostgreSQL schema of its own (migrated), no broker.

The relay is not started (no lifespan), so the outbox keeps what each request wrote
and the tests can read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.messaging.tables import outbox
from dealflow_common.migrations import migrate
from dealflow_common.platform import build_platform
from dealflow_common.testing import new_schema_name
from dealflow_opportunity.adapters.tables import (
    assignment_history,
    notes,
    opportunities,
    opportunity_owners,
    sales_history,
)
from dealflow_opportunity.bootstrap import MIGRATIONS, OpportunitySettings, build_app


class Clock:
    """The service's clock, moved by the tests to measure days between stage moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: AsyncEngine
    clock: Clock
    token: Callable[..., str]

    def headers(
        self,
        user: str,
        roles: tuple[str, ...],
        teams: tuple[str, ...],
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, roles, teams)}", **(extra or {})}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "alice",
        roles: tuple[str, ...] = ("rep",),
        teams: tuple[str, ...] = ("emea",),
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.request(
            method, path, json=body, headers=self.headers(user, roles, teams, headers)
        )

    async def open(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": "Fleet renewal",
            "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
            "value": {"amount": "50000.00", "currency": "USD"},
        }
        user = overrides.pop("user", "alice")
        roles = overrides.pop("roles", ("rep",))
        teams = overrides.pop("teams", ("emea",))
        body.update(overrides)
        response = await self.call(
            "POST", "/opportunities", body, user=user, roles=roles, teams=teams
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def written(self) -> dict[str, int]:
        """Row counts of every table a request may write: equal before and after = no write."""
        async with self.engine.connect() as connection:
            return {
                table.name: int(await connection.scalar(select(func.count()).select_from(table)))
                for table in (
                    opportunities,
                    opportunity_owners,
                    sales_history,
                    notes,
                    assignment_history,
                    outbox,
                )
            }

    async def events_of(self, opportunity_id: str) -> list[tuple[str, int]]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(outbox.c.event_type, outbox.c.sequence)
                .where(outbox.c.subject == opportunity_id)
                .order_by(outbox.c.id)
            )
            return [(t, s) for t, s in rows]


@pytest.fixture(scope="module")
async def api(
    database_url: str, schemas: list[str], token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[Api]:
    schema = new_schema_name("opportunity")
    schemas.append(schema)
    settings = OpportunitySettings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET=jwt_secret,
        database_schema=schema,
    )
    await migrate(settings, MIGRATIONS)
    clock = Clock()
    platform = build_platform(settings, publishes=[OPPORTUNITY_EVENTS], clock=clock)
    app = build_app(settings, platform)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://opportunity") as http:
        yield Api(http, platform.engine, clock, token)
    await platform.engine.dispose()
