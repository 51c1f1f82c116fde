"""The reporting service on a real database of its own (migrated), no broker: a
PostgreSQL schema or a SQLite file, each test running once on each (`databases`).

Deals reach it the way they do in production: as opportunity events through its
consumer (`deal(...)`, `move(...)`, `win(...)`, `lose(...)` below).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Customer,
    LeadOrigin,
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityLost,
    OpportunityShared,
    OpportunityStageChanged,
    OpportunityUnshared,
    OpportunityWon,
    Share,
    Stage,
)
from dealflow_common.testing import (
    ComponentDatabases,
    ServiceUnderTest,
    deal_state,
    service_under_test,
)
from dealflow_reporting.adapters.tables import (
    deal_owners,
    deal_shares,
    deals,
    exchange_rates,
    forecast_snapshot_lines,
    forecast_snapshots,
    stage_changes,
)
from dealflow_reporting.bootstrap import MIGRATIONS, ReportingSettings, build_app

ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}
CREATED_AT = datetime(2026, 1, 5, 9, tzinfo=UTC)

DEFAULT_PROBABILITY = {
    Stage.LEAD: 10,
    Stage.QUALIFICATION: 25,
    Stage.PROPOSAL: 50,
    Stage.NEGOTIATION: 75,
}


OWNERS: dict[uuid.UUID, tuple[str, ...]] = {}
"""Each test deal's owners, which its stage changes carry (as the opportunity's do)."""


class Reporting(ServiceUnderTest):
    async def deal(
        self,
        amount: str = "1000.00",
        currency: str = "USD",
        *,
        owners: tuple[str, ...] = ("ann",),
        team_id: str | None = "emea",
        customer: str = "acme",
        lead_origin: LeadOrigin | None = None,
        expected_close_date: date | None = date(2026, 8, 15),
        created_by: str | None = None,
        created_at: datetime = CREATED_AT,
        shares: tuple[Share, ...] = (),
    ) -> uuid.UUID:
        """A new deal in lead, as its `opportunity.created` makes it known."""
        opportunity_id = uuid.uuid4()
        OWNERS[opportunity_id] = owners
        state = deal_state(
            opportunity_id,
            title=f"Deal {opportunity_id.hex[:6]}",
            customer=Customer(kind="organization", id=customer, name=customer.upper()),
            value=Money.of(amount, currency),
            stage=Stage.LEAD,
            probability=10,
            expected_close_date=expected_close_date,
            lead_origin=lead_origin,
            owners=list(owners),
            team_id=team_id,
            created_by=created_by or (owners[0] if owners else "someone"),
            created_at=created_at,
            updated_at=created_at,
            shares=list(shares),
        )
        await self.consume(OpportunityCreated(opportunity_id=opportunity_id, opportunity=state))
        return opportunity_id

    def stage_change(
        self,
        opportunity_id: uuid.UUID,
        from_stage: Stage,
        to_stage: Stage,
        *,
        days: float = 2.0,
        at: datetime | None = None,
        probability: int | None = None,
    ) -> OpportunityStageChanged:
        return OpportunityStageChanged(
            opportunity_id=opportunity_id,
            from_stage=from_stage,
            to_stage=to_stage,
            probability=probability
            if probability is not None
            else DEFAULT_PROBABILITY.get(to_stage, 100 if to_stage == Stage.CLOSED_WON else 0),
            changed_by="ann",
            changed_at=at or CREATED_AT + timedelta(days=days),
            days_in_previous_stage=days,
            owners=list(OWNERS.get(opportunity_id, ())),
            version=2,
        )

    async def move(self, opportunity_id: uuid.UUID, *path: Stage, **options: Any) -> None:
        """Through each stage of `path` from lead, one stage change each."""
        previous = Stage.LEAD
        for stage in path:
            await self.consume(self.stage_change(opportunity_id, previous, stage, **options))
            previous = stage

    async def win(
        self, opportunity_id: uuid.UUID, at: datetime, value: Money, from_stage: Stage
    ) -> None:
        await self.consume(
            self.stage_change(opportunity_id, from_stage, Stage.CLOSED_WON, at=at),
            OpportunityWon(
                opportunity_id=opportunity_id,
                won_quote_id=None,
                value=value,
                won_by="ann",
                won_at=at,
                version=5,
            ),
        )

    async def lose(
        self, opportunity_id: uuid.UUID, at: datetime, reason: str, from_stage: Stage
    ) -> None:
        await self.consume(
            self.stage_change(opportunity_id, from_stage, Stage.CLOSED_LOST, at=at),
            OpportunityLost(
                opportunity_id=opportunity_id,
                reason=reason,
                lost_by="ann",
                lost_at=at,
                version=5,
            ),
        )

    async def assign_team(self, opportunity_id: uuid.UUID, team_id: str) -> None:
        OWNERS[opportunity_id] = ()
        await self.consume(
            OpportunityAssigned(
                opportunity_id=opportunity_id,
                action="team_assigned",
                user_id=None,
                owners=[],
                team_id=team_id,
                assigned_by="mia",
                assigned_at=CREATED_AT,
                version=3,
            )
        )

    async def share(self, opportunity_id: uuid.UUID, share: Share, *after: Share) -> None:
        """`opportunity.shared`: `share` added; `after` is every share after it."""
        await self.consume(
            OpportunityShared(
                opportunity_id=opportunity_id,
                share=share,
                shares=list(after),
                shared_by="ann",
                shared_at=CREATED_AT,
                version=4,
            )
        )

    async def unshare(self, opportunity_id: uuid.UUID, share: Share, *after: Share) -> None:
        """`opportunity.unshared`: `share` revoked; `after` is every share left."""
        await self.consume(
            OpportunityUnshared(
                opportunity_id=opportunity_id,
                share=share,
                shares=list(after),
                unshared_by="ann",
                unshared_at=CREATED_AT,
                version=5,
            )
        )

    async def get(self, path: str, **who: Any) -> dict[str, Any]:
        response = await self.call("GET", path, **(who or ADMIN))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def set_rates(self, *rates: tuple[str, str, str, str]) -> None:
        body = {
            "rates": [
                {"from_currency": f, "to_currency": t, "effective_from": d, "rate": r}
                for f, t, d, r in rates
            ]
        }
        response = await self.call("PUT", "/exchange-rates", body, **ADMIN)
        assert response.status_code == 200, response.text

    async def written(self) -> dict[str, int]:
        return await self.row_counts(
            deals,
            deal_owners,
            deal_shares,
            stage_changes,
            exchange_rates,
            forecast_snapshots,
            forecast_snapshot_lines,
        )


@pytest.fixture(scope="module")
def start_service(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> Callable[..., AbstractAsyncContextManager[Reporting]]:
    def start(**settings: Any) -> AbstractAsyncContextManager[Reporting]:
        configured = databases.settings(ReportingSettings, jwt_secret, **settings)
        return service_under_test(Reporting, configured, build_app, MIGRATIONS, token, [])

    return start


@pytest.fixture
async def service(
    start_service: Callable[..., AbstractAsyncContextManager[Reporting]],
) -> AsyncIterator[Reporting]:
    """A fresh service per test: figures are sums over every deal it knows."""
    async with start_service() as reporting:
        yield reporting
