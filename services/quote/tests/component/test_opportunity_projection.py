"""The quote service's copy of an opportunity never goes back in time (DESIGN.md
section 2): the relay may send a deal's records again, so they can arrive as 3, 5, 4;
what 4 says is kept only where no newer event said otherwise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from dealflow_common.contracts.opportunity import (
    OpportunityAssigned,
    OpportunityLost,
    OpportunityShared,
    OpportunityStageChanged,
    Share,
    ShareGrant,
    Stage,
)
from dealflow_common.messaging.tables import inbox
from dealflow_quote.adapters.tables import known_opportunities

FREE = {
    "description": "Widget",
    "quantity": "1",
    "unit_price": {"amount": "50.00", "currency": "USD"},
}


def stage_changed(deal: str, from_stage: Stage, to_stage: Stage, owners: list[str]) -> Any:
    return OpportunityStageChanged(
        opportunity_id=uuid.UUID(deal),
        from_stage=from_stage,
        to_stage=to_stage,
        probability=50,
        changed_by="alice",
        changed_at=datetime.now(UTC),
        days_in_previous_stage=1.0,
        owners=owners,
        version=2,
    )


def team_assigned(deal: str, team_id: str, owners: list[str]) -> Any:
    return OpportunityAssigned(
        opportunity_id=uuid.UUID(deal),
        action="team_assigned",
        user_id=None,
        owners=owners,
        team_id=team_id,
        assigned_by="mia",
        assigned_at=datetime.now(UTC),
        version=2,
    )


def shared(deal: str, user: str) -> Any:
    share = Share(kind="user", id=user, grant=ShareGrant.EDIT)
    return OpportunityShared(
        opportunity_id=uuid.UUID(deal),
        share=share,
        shares=[share],
        shared_by="alice",
        shared_at=datetime.now(UTC),
        version=2,
    )


async def quote_answer(service, deal: str, user: str, teams: tuple[str, ...]) -> int:
    response = await service.call(
        "POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]}, user=user, teams=teams
    )
    return int(response.status_code)


async def test_a_late_stage_change_does_not_reopen_a_lost_deal(service) -> None:
    deal = await service.deal(stage=Stage.NEGOTIATION)  # sequence 1
    lost = OpportunityLost(
        opportunity_id=uuid.UUID(deal),
        reason="went with a competitor",
        lost_by="alice",
        lost_at=datetime.now(UTC),
        version=3,
    )
    await service.consume(lost, sequence=5)
    await service.consume(
        stage_changed(deal, Stage.NEGOTIATION, Stage.PROPOSAL, ["alice"]), sequence=4
    )

    before = await service.written()
    response = await service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]})
    assert response.status_code == 409, response.text
    assert "is closed_lost" in response.json()["detail"], response.json()
    assert await service.written() == before


async def test_a_late_team_move_is_kept_where_no_newer_event_said_otherwise(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea", stage=Stage.PROPOSAL)
    # 5: bob is given the deal to work on; 4, arriving after it: the deal moves to apac.
    await service.consume(shared(deal, "bob"), sequence=5)
    await service.consume(team_assigned(deal, "apac", ["alice"]), sequence=4)

    assert await quote_answer(service, deal, "zoe", ("apac",)) == 201  # the team of 4
    assert await quote_answer(service, deal, "eve", ("emea",)) == 422  # not the old team
    assert await quote_answer(service, deal, "bob", ()) == 201  # the share of 5


async def test_a_move_between_open_stages_changes_nothing_the_service_keeps(service) -> None:
    # Only whether a deal is open matters here; the owners a stage move carries changed,
    # if at all, with their own event. Such a move is not even written, nor remembered
    # in the inbox: applied again, it would change nothing either.
    deal = await service.deal(owners=("alice",), stage=Stage.PROPOSAL)
    before = await known_row(service, deal)
    remembered = await inbox_rows(service)
    await service.consume(
        stage_changed(deal, Stage.PROPOSAL, Stage.NEGOTIATION, ["alice", "bob"]), sequence=2
    )
    assert await known_row(service, deal) == before
    assert await inbox_rows(service) == remembered
    assert await quote_answer(service, deal, "alice", ()) == 201


async def test_a_move_into_a_closed_stage_is_learnt_and_remembered(service) -> None:
    deal = await service.deal(owners=("alice",), stage=Stage.NEGOTIATION)
    remembered = await inbox_rows(service)
    await service.consume(
        stage_changed(deal, Stage.NEGOTIATION, Stage.CLOSED_LOST, ["alice"]), sequence=2
    )
    assert (await known_row(service, deal))["stage"] == Stage.CLOSED_LOST.value
    assert await inbox_rows(service) == remembered + 1


async def inbox_rows(service) -> int:
    async with service.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(inbox)))


async def known_row(service, deal: str) -> dict[str, Any]:
    async with service.engine.connect() as connection:
        row = (
            await connection.execute(
                select(known_opportunities).where(known_opportunities.c.id == uuid.UUID(deal))
            )
        ).one()
    return dict(row._mapping)


async def test_an_event_that_overtakes_the_creation_is_kept(service) -> None:
    deal = uuid.uuid4()
    lost = OpportunityLost(
        opportunity_id=deal,
        reason="no budget",
        lost_by="alice",
        lost_at=datetime.now(UTC),
        version=2,
    )
    await service.consume(lost, sequence=2)
    await service.deal(opportunity_id=deal, stage=Stage.PROPOSAL, team_id="emea", sequence=1)

    # Closed (the stage of 2), not unknown to eve: she sees it through the team of 1.
    assert await quote_answer(service, str(deal), "eve", ("emea",)) == 409
