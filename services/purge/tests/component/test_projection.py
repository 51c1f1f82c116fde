"""The agent's copy of a deal learns only what its decisions need: a move between two
open stages is skipped before any transaction, without an inbox row; a move into a
closed stage is learnt and remembered."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dealflow_common.contracts.opportunity import OpportunityStageChanged, Stage
from dealflow_common.messaging.tables import inbox
from dealflow_purge.adapters.tables import known_deals


def moved(agent, deal: uuid.UUID, from_stage: Stage, to_stage: Stage) -> OpportunityStageChanged:
    return OpportunityStageChanged(
        opportunity_id=deal,
        from_stage=from_stage,
        to_stage=to_stage,
        probability=60,
        changed_by="alice",
        changed_at=agent.clock() - timedelta(days=1),
        days_in_previous_stage=1.0,
        owners=["alice"],
        version=4,
    )


async def known_row(agent, deal: uuid.UUID) -> dict[str, Any]:
    async with agent.engine.connect() as connection:
        row = (
            await connection.execute(
                select(known_deals).where(known_deals.c.opportunity_id == deal)
            )
        ).one()
    return dict(row._mapping)


async def inbox_rows(agent) -> int:
    async with agent.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(inbox)))


async def test_a_move_between_open_stages_is_skipped_without_an_inbox_row(agent) -> None:
    deal, _ = await agent.deal(Stage.PROPOSAL, None)
    before, remembered = await known_row(agent, deal), await inbox_rows(agent)
    await agent.consume(moved(agent, deal, Stage.PROPOSAL, Stage.NEGOTIATION))
    assert await known_row(agent, deal) == before
    assert await inbox_rows(agent) == remembered


async def test_a_move_into_a_closed_stage_is_learnt_and_remembered(agent) -> None:
    deal, _ = await agent.deal(Stage.NEGOTIATION, None)
    remembered = await inbox_rows(agent)
    await agent.consume(moved(agent, deal, Stage.NEGOTIATION, Stage.CLOSED_LOST))
    assert (await known_row(agent, deal))["stage"] == Stage.CLOSED_LOST.value
    assert await inbox_rows(agent) == remembered + 1
