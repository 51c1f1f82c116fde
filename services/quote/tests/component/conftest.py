"""The quote service on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`).

Opportunities become known to it the way they do in production: their events go
through its consumer (`deal(...)` below).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from dealflow_common.contracts.opportunity import OpportunityCreated, Stage
from dealflow_common.contracts.topics import QUOTE_EVENTS
from dealflow_common.testing import (
    ComponentDatabases,
    ServiceUnderTest,
    deal_state,
    service_under_test,
)
from dealflow_quote.adapters.tables import known_opportunities, products, quote_lines, quotes
from dealflow_quote.bootstrap import MIGRATIONS, QuoteSettings, build_app

ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}


class Quotes(ServiceUnderTest):
    async def deal(
        self,
        owners: tuple[str, ...] = ("alice",),
        team_id: str | None = "emea",
        stage: Stage = Stage.PROPOSAL,
        opportunity_id: uuid.UUID | None = None,
        sequence: int | None = None,
    ) -> str:
        """An opportunity this service knows, as its `opportunity.created` made it known."""
        opportunity_id = opportunity_id or uuid.uuid4()
        await self.consume(
            OpportunityCreated(
                opportunity_id=opportunity_id,
                opportunity=deal_state(
                    opportunity_id,
                    stage=stage,
                    owners=list(owners),
                    team_id=team_id,
                    created_by=owners[0] if owners else "someone",
                ),
            ),
            sequence=sequence,
        )
        return str(opportunity_id)

    async def draft(
        self, opportunity_id: str, *lines: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        body = {
            "opportunity_id": opportunity_id,
            "lines": list(lines)
            or [
                {
                    "description": "Widget",
                    "quantity": "2",
                    "unit_price": {"amount": "50.00", "currency": "USD"},
                }
            ],
            **extra,
        }
        response = await self.call("POST", "/quotes", body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def presented(self, opportunity_id: str, **extra: Any) -> dict[str, Any]:
        quote = await self.draft(opportunity_id, **extra)
        response = await self.call("POST", f"/quotes/{quote['id']}/present")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def quote(self, quote_id: str) -> dict[str, Any]:
        return dict((await self.call("GET", f"/quotes/{quote_id}", roles=("admin",))).json())

    async def written(self) -> dict[str, int]:
        return await self.row_counts(quotes, quote_lines, products, known_opportunities)


@pytest.fixture(scope="module")
def start_service(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> Callable[..., AbstractAsyncContextManager[Quotes]]:
    """`async with start_service(**settings) as service`: a quote service of its own, on a
    fresh database, with `settings` (timeouts, say) changed."""

    def start(**settings: Any) -> AbstractAsyncContextManager[Quotes]:
        configured = databases.settings(
            QuoteSettings, jwt_secret, **{"opportunity_wait_ms": 200, **settings}
        )
        return service_under_test(Quotes, configured, build_app, MIGRATIONS, token, [QUOTE_EVENTS])

    return start


@pytest.fixture(scope="module")
async def service(
    start_service: Callable[..., AbstractAsyncContextManager[Quotes]],
) -> AsyncIterator[Quotes]:
    async with start_service() as quotes_service:
        yield quotes_service
