"""Every (stage, target) pair of the stage machine, against a matrix written by hand.

The matrix is the business rule as a sales manager would state it, kept apart from
`stages.TRANSITIONS` on purpose: the test fails if the table drifts from the rule.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_opportunity.domain import stages
from dealflow_opportunity.domain.errors import StageMoveNotAllowed
from dealflow_opportunity.domain.model import Opportunity

OpportunityAt = Callable[..., Opportunity]

ORDER = list(Stage)
# Hand moves through the stage endpoint. M: allowed move, L: allowed with a lost reason.
HAND_MOVES = """
              lead qualification proposal negotiation closed_won closed_lost purge_pending purged
lead           .    M             .        .           .          L           .             .
qualification  M    .             M        .           .          L           .             .
proposal       M    M             .        M           .          L           .             .
negotiation    M    M             M        .           M          L           .             .
closed_won     .    .             .        .           .          .           .             .
closed_lost    .    .             .        .           .          .           .             .
purge_pending  .    .             .        .           .          .           .             .
purged         .    .             .        .           .          .           .             .
"""


def _matrix() -> dict[tuple[Stage, Stage], str]:
    lines = [line.split() for line in HAND_MOVES.strip().splitlines()]
    header = [Stage(name) for name in lines[0]]
    cells = {}
    for row in lines[1:]:
        source = Stage(row[0])
        for target, mark in zip(header, row[1:], strict=True):
            cells[(source, target)] = mark
    return cells


MATRIX = _matrix()
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
QUOTE = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.mark.parametrize(("source", "target"), list(MATRIX), ids=lambda s: s.value)
def test_hand_move(opportunity_at: OpportunityAt, source: Stage, target: Stage) -> None:
    opportunity = opportunity_at(source, entered=NOW - timedelta(days=2))
    before = (opportunity.stage, opportunity.version, opportunity.probability)
    expected_allowed = [t for t in ORDER if MATRIX[(source, t)] != "."]

    if MATRIX[(source, target)] == ".":
        with pytest.raises(StageMoveNotAllowed) as refused:
            opportunity.move_to(target, "bob", NOW, lost_reason="budget cut")
        assert refused.value.allowed == [s.value for s in expected_allowed]
        assert (opportunity.stage, opportunity.version, opportunity.probability) == before
        assert opportunity.events == []
        assert opportunity.new_history == []
    else:
        opportunity.move_to(target, "bob", NOW, lost_reason="budget cut")
        assert opportunity.stage == target
        assert opportunity.version == before[1] + 1
        changed = [e for e in opportunity.events if e.event_type == "opportunity.stage_changed"]
        assert len(changed) == 1
        assert (changed[0].from_stage, changed[0].to_stage) == (source, target)  # type: ignore[attr-defined]
        assert opportunity.new_history[-1].days_in_previous_stage == 2.0


@pytest.mark.parametrize("source", ORDER, ids=lambda s: s.value)
def test_allowed_moves_match_the_rule(opportunity_at: OpportunityAt, source: Stage) -> None:
    assert opportunity_at(source).allowed_moves() == [
        t for t in ORDER if MATRIX[(source, t)] != "."
    ]


@pytest.mark.parametrize("source", ORDER, ids=lambda s: s.value)
def test_an_accepted_quote_wins_exactly_the_open_stages(
    opportunity_at: OpportunityAt, source: Stage
) -> None:
    opportunity = opportunity_at(source)
    won = opportunity.accept_quote(QUOTE, "system:quote", NOW)
    is_open = source in (Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION)
    assert won is is_open
    types = [e.event_type for e in opportunity.events]
    if is_open:
        assert opportunity.stage == Stage.CLOSED_WON
        assert types == ["opportunity.stage_changed", "opportunity.won"]
    else:
        assert opportunity.stage == source
        assert types == ["opportunity.acceptance_refused"]


def test_default_probabilities_are_the_published_ones() -> None:
    assert dict(stages.DEFAULT_PROBABILITY) == {
        Stage.LEAD: 10,
        Stage.QUALIFICATION: 30,
        Stage.PROPOSAL: 50,
        Stage.NEGOTIATION: 70,
        Stage.CLOSED_WON: 100,
        Stage.CLOSED_LOST: 0,
    }


def test_purge_part_of_the_machine() -> None:
    assert stages.targets(Stage.CLOSED_WON, [stages.Trigger.REQUEST_PURGE]) == [Stage.PURGE_PENDING]
    assert stages.targets(Stage.CLOSED_LOST, [stages.Trigger.REQUEST_PURGE]) == [
        Stage.PURGE_PENDING
    ]
    assert stages.targets(Stage.PURGE_PENDING, [stages.Trigger.PURGE]) == [Stage.PURGED]
    for open_stage in stages.OPEN_STAGES:
        assert stages.targets(open_stage, [stages.Trigger.REQUEST_PURGE]) == []


def test_diagram_has_one_arrow_per_transition() -> None:
    arrows = [line for line in stages.mermaid_diagram().splitlines() if ": " in line]
    count = sum(len(t) for by in stages.TRANSITIONS.values() for t in by.values())
    assert len(arrows) == count
