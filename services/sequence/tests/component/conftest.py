"""The sequence service on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`).

Deals become known to it the way they do in production: their events go through its
consumer (`deal(...)`, `move(...)` below). The scheduler's jobs are called by the tests
(`tick()`), on the service's movable clock, so no test sleeps for days.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Contact,
    Customer,
    OpportunityCreated,
    OpportunityLost,
    OpportunityStageChanged,
    OpportunityState,
    OpportunityUpdated,
    Stage,
)
from dealflow_common.contracts.topics import SEQUENCE_EVENTS
from dealflow_common.testing import ComponentDatabases, ServiceUnderTest, service_under_test
from dealflow_sequence.adapters.repository import DefinitionCache
from dealflow_sequence.adapters.tables import (
    enrollment_steps,
    enrollments,
    known_deals,
    sequence_versions,
    sequences,
    task_notes,
    tasks,
)
from dealflow_sequence.application.scheduler import report_stale_deals, run_due_steps
from dealflow_sequence.application.unit_of_work import SequenceUnitOfWork
from dealflow_sequence.bootstrap import MIGRATIONS, SequenceSettings, build_app

MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}


class Sequences(ServiceUnderTest):
    async def consume(self, *payloads: Any, **options: Any) -> None:
        """As Kafka would deliver them, stamped with the service clock's time (activity)."""
        await super().consume(*payloads, **{"time": self.clock(), **options})

    def unit_of_work(self) -> SequenceUnitOfWork:
        """A unit of work like the service's own (with a cache of its own, like a replica)."""
        return SequenceUnitOfWork(
            self.platform.engine, self.platform.outbox, self.platform.clock, DefinitionCache()
        )

    async def tick(self) -> int:
        """One run of the due-step job, as APScheduler runs it."""
        return await run_due_steps(self.unit_of_work, 50)

    async def check_stale(self, days: float = 7) -> int:
        return await report_stale_deals(self.unit_of_work, timedelta(days=days), 50)

    async def deal(
        self,
        owners: tuple[str, ...] = ("alice",),
        team_id: str | None = "emea",
        stage: Stage = Stage.QUALIFICATION,
        expected_close_date: date | None = None,
    ) -> str:
        """A deal this service knows, as its `opportunity.created` made it known."""
        created = self.created(owners, team_id, stage, expected_close_date)
        await self.consume(created)
        return str(created.opportunity_id)

    def created(
        self,
        owners: tuple[str, ...] = ("alice",),
        team_id: str | None = "emea",
        stage: Stage = Stage.QUALIFICATION,
        expected_close_date: date | None = None,
    ) -> OpportunityCreated:
        """A new deal's `opportunity.created`, not delivered yet."""
        opportunity_id = uuid.uuid4()
        state = deal_state(
            opportunity_id, owners, team_id, stage, expected_close_date, self.clock()
        )
        return OpportunityCreated(opportunity_id=opportunity_id, opportunity=state)

    async def update(self, opportunity_id: str, updated_by: str, **changes: Any) -> None:
        """An `opportunity.updated` of a deal made by `deal()` (with its defaults)."""
        state = deal_state(
            uuid.UUID(opportunity_id), ("alice",), "emea", Stage.QUALIFICATION, None, self.clock()
        ).model_copy(update=changes)
        await self.consume(
            OpportunityUpdated(
                opportunity_id=state.id,
                opportunity=state,
                changed_fields=sorted(changes),
                updated_by=updated_by,
            )
        )

    def moved(
        self, opportunity_id: str, to: Stage, from_stage: Stage = Stage.QUALIFICATION
    ) -> OpportunityStageChanged:
        return OpportunityStageChanged(
            opportunity_id=uuid.UUID(opportunity_id),
            from_stage=from_stage,
            to_stage=to,
            probability=50,
            changed_by="alice",
            changed_at=self.clock(),
            days_in_previous_stage=1.0,
            owners=["alice"],
            version=2,
        )

    async def move(
        self,
        opportunity_id: str,
        to: Stage,
        from_stage: Stage = Stage.QUALIFICATION,
        sequence: int | None = None,
    ) -> None:
        await self.consume(self.moved(opportunity_id, to, from_stage), sequence=sequence)

    def lost(self, opportunity_id: str) -> OpportunityLost:
        return OpportunityLost(
            opportunity_id=uuid.UUID(opportunity_id),
            reason="budget",
            lost_by="alice",
            lost_at=self.clock(),
            version=3,
        )

    async def lose(self, opportunity_id: str) -> None:
        await self.consume(self.lost(opportunity_id))

    async def define(self, *steps: dict[str, Any], **body: Any) -> dict[str, Any]:
        request = {
            "name": f"Proposal follow-up {uuid.uuid4().hex[:6]}",
            "trigger": {"event": "opportunity.stage_changed", "stage": "proposal"},
            "steps": list(steps) or [{"after": "P2D", "action": "task", "title": "Call back"}],
            **body,
        }
        response = await self.call("POST", "/sequences", request, **MANAGER)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def enrollments(self, opportunity_id: str, **who: Any) -> list[dict[str, Any]]:
        response = await self.call("GET", f"/opportunities/{opportunity_id}/enrollments", **who)
        assert response.status_code == 200, response.text
        return list(response.json())

    async def enrollment_of(self, opportunity_id: str, sequence_id: str) -> dict[str, Any]:
        (found,) = [
            e for e in await self.enrollments(opportunity_id) if e["sequence_id"] == sequence_id
        ]
        return found

    async def tasks_of(self, opportunity_id: str, **query: str) -> list[dict[str, Any]]:
        params = "".join(f"&{k}={v}" for k, v in query.items())
        response = await self.call("GET", f"/tasks?opportunity_id={opportunity_id}{params}")
        assert response.status_code == 200, response.text
        return list(response.json())

    async def types_of(self, opportunity_id: str) -> list[str]:
        return [event_type for event_type, _ in await self.events_of(opportunity_id)]

    async def written(self) -> dict[str, int]:
        return await self.row_counts(
            sequences,
            sequence_versions,
            enrollments,
            enrollment_steps,
            tasks,
            task_notes,
            known_deals,
        )


def deal_state(
    opportunity_id: uuid.UUID,
    owners: tuple[str, ...],
    team_id: str | None,
    stage: Stage,
    expected_close_date: date | None,
    now: datetime,
) -> OpportunityState:
    return OpportunityState(
        id=opportunity_id,
        title="Fleet renewal",
        description=None,
        customer=Customer(kind="organization", id="acme", name="ACME Corp"),
        contact=Contact(name="Jo Buyer", email="jo@acme.example"),
        contact_address=None,
        value=Money.of("50000", "USD"),
        stage=stage,
        probability=30,
        expected_close_date=expected_close_date,
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
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def start_service(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> Callable[..., AbstractAsyncContextManager[Sequences]]:
    def start(**settings: Any) -> AbstractAsyncContextManager[Sequences]:
        configured = databases.settings(SequenceSettings, jwt_secret, **settings)
        return service_under_test(
            Sequences, configured, build_app, MIGRATIONS, token, [SEQUENCE_EVENTS]
        )

    return start


@pytest.fixture(scope="module")
async def service(
    start_service: Callable[..., AbstractAsyncContextManager[Sequences]],
) -> AsyncIterator[Sequences]:
    async with start_service() as sequences_service:
        yield sequences_service


@pytest.fixture(autouse=True)
async def no_sequence_outlives_its_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Sequences trigger on every deal of the service: retire each test's afterwards."""
    yield
    if "service" not in request.fixturenames:
        return
    service: Sequences = request.getfixturevalue("service")
    listed = await service.call("GET", "/sequences", **ADMIN)
    for sequence in listed.json():
        await service.call("POST", f"/sequences/{sequence['id']}/retire", **ADMIN)
