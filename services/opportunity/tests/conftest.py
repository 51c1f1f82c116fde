"""Builders shared by the opportunity service's tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import Customer, Stage
from dealflow_opportunity.domain.model import Opportunity

CREATED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def build_opportunity(
    stage: Stage = Stage.LEAD,
    *,
    entered: datetime = CREATED,
    owners: list[str] | None = None,
    team_id: str | None = None,
    created_by: str = "alice",
    version: int = 3,
) -> Opportunity:
    """An opportunity as loaded from the repository, sitting in `stage` since `entered`."""
    closed = stage in (Stage.CLOSED_WON, Stage.CLOSED_LOST, Stage.PURGE_PENDING, Stage.PURGED)
    return Opportunity(
        id=uuid.uuid4(),
        title="Fleet renewal",
        description=None,
        customer=Customer(kind="organization", id="acme", name="ACME Corp"),
        contact=None,
        contact_address=None,
        value=Money.of("50000.00", "USD"),
        stage=stage,
        probability=10,
        expected_close_date=None,
        next_action=None,
        lead_origin=None,
        external_reference=None,
        owners=list(owners if owners is not None else ["alice"]),
        team_id=team_id,
        won_quote_id=None,
        order_id=None,
        lost_reason="lost earlier" if stage == Stage.CLOSED_LOST else None,
        created_by=created_by,
        created_at=CREATED,
        updated_at=entered,
        stage_entered_at=entered,
        closed_at=entered if closed else None,
        version=version,
    )


@pytest.fixture
def opportunity_at() -> Callable[..., Opportunity]:
    return build_opportunity
