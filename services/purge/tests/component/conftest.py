"""The purge service on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`).

Each test module gets its own database: a real run purges every eligible deal it finds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    OpportunityCreated,
    Stage,
)
from dealflow_common.contracts.quote import QuoteCreated, QuoteStatus
from dealflow_common.messaging.tables import outbox
from dealflow_common.testing import (
    ComponentDatabases,
    ServiceUnderTest,
    deal_state,
    service_under_test,
)
from dealflow_purge.adapters.tables import (
    deal_purges,
    holds,
    known_deals,
    purge_policy,
    purge_run_items,
    purge_runs,
)
from dealflow_purge.bootstrap import MIGRATIONS, PUBLISHES, PurgeSettings, build_app

OPERATOR: dict[str, Any] = {"user": "olga", "roles": ("operator",), "teams": ()}


class Agent(ServiceUnderTest):
    async def deal(
        self, stage: Stage = Stage.CLOSED_WON, closed_days_ago: float | None = 40, quotes: int = 0
    ) -> tuple[uuid.UUID, list[uuid.UUID]]:
        """A deal as the opportunity service announces it, with `quotes` quotes."""
        now = self.clock()
        deal_id = uuid.uuid4()
        closed_at = None if closed_days_ago is None else now - timedelta(days=closed_days_ago)
        state = deal_state(
            deal_id,
            title="Fleet renewal",
            stage=stage,
            probability=100,
            created_at=now - timedelta(days=100),
            updated_at=closed_at or now,
            closed_at=closed_at,
            version=3,
        )
        await self.consume(OpportunityCreated(opportunity_id=deal_id, opportunity=state))
        quote_ids = [uuid.uuid4() for _ in range(quotes)]
        for quote_id in quote_ids:
            await self.consume(
                QuoteCreated(
                    opportunity_id=deal_id,
                    quote_id=quote_id,
                    status=QuoteStatus.DRAFT,
                    total=Money.of("1000", "USD"),
                    valid_until=now,
                    line_count=1,
                    created_by="alice",
                    created_at=now,
                )
            )
        return deal_id, quote_ids

    async def written(self) -> dict[str, int]:
        return await self.row_counts(
            purge_policy, holds, deal_purges, purge_runs, purge_run_items, known_deals
        )

    async def commands(self) -> list[tuple[str, str]]:
        """(type, subject) of every command the agent wrote."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(outbox.c.event_type, outbox.c.subject)
                .where(outbox.c.event_type.like("%.purge_requested"))
                .order_by(outbox.c.id)
            )
            return [(t, s) for t, s in rows]

    async def run_until(
        self, run_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run = (await self.call("GET", f"/purge/runs/{run_id}", **OPERATOR)).json()
            if done(run):
                return dict(run)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"run never got there: {run}")
            await asyncio.sleep(0.05)

    async def items(self, run_id: str) -> dict[str, dict[str, Any]]:
        found = (await self.call("GET", f"/purge/runs/{run_id}/items", **OPERATOR)).json()
        return {i["opportunity_id"]: i for i in found}


@pytest.fixture(scope="module")
async def agent(
    databases: ComponentDatabases,
    token: Callable[..., str],
    jwt_secret: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Agent]:
    settings = databases.settings(
        PurgeSettings,
        jwt_secret,
        purge_poll_interval_ms=20,
        purge_answer_timeout_seconds=60,
        purge_journal_dir=tmp_path_factory.mktemp("purge-journal"),
    )
    async with service_under_test(
        Agent, settings, build_app, MIGRATIONS, token, PUBLISHES
    ) as service:
        yield service
