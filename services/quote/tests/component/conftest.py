"""The quote service on a real PostgreSQL schema of its own (migrated), no broker.

Opportunities become known to it the way they do in production: their events go
through its consumer (`deal(...)` below).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Customer,
    OpportunityCreated,
    OpportunityState,
    Stage,
)
from dealflow_common.contracts.topics import QUOTE_EVENTS
from dealflow_common.testing import (
    ServiceUnderTest,
    new_schema_name,
    service_under_test,
    settings_for,
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
    ) -> str:
        """An opportunity this service knows, as its `opportunity.created` made it known."""
        now = datetime.now(UTC)
        opportunity_id = uuid.uuid4()
        await self.consume(
            OpportunityCreated(
                opportunity_id=opportunity_id,
                opportunity=OpportunityState(
                    id=opportunity_id,
                    title="Fleet",
                    description=None,
                    customer=Customer(kind="organization", id="acme", name="ACME"),
                    contact=None,
                    contact_address=None,
                    value=Money.of("1000", "USD"),
                    stage=stage,
                    probability=50,
                    expected_close_date=None,
                    next_action=None,
                    lead_origin=None,
                    external_reference=None,
                    owners=list(owners),
                    team_id=team_id,
                    won_quote_id=None,
                    order_id=None,
                    lost_reason=None,
                    created_by=owners[0] if owners else "someone",
                    created_at=now,
                    updated_at=now,
                    closed_at=None,
                    version=1,
                ),
            )
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
async def service(
    database_url: str, schemas: list[str], token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[Quotes]:
    schema = new_schema_name("quote")
    schemas.append(schema)
    settings = settings_for(
        QuoteSettings, database_url, jwt_secret, database_schema=schema, opportunity_wait_ms=200
    )
    async with service_under_test(
        Quotes, settings, build_app, MIGRATIONS, token, [QUOTE_EVENTS]
    ) as quotes_service:
        yield quotes_service
