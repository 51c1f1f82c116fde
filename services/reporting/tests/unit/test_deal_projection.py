"""The deal copy is the same whatever order its events arrive in."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from dealflow_common.contracts.opportunity import Share, ShareGrant, Stage
from dealflow_reporting.domain.deal import LOST, DealFacts, ReportedDeal

SOURCE = "/dealflow/opportunity"
CREATED = DealFacts(stage=Stage.LEAD, owners=["ann"], team_id="emea", probability=10, shares=[])
TO_DAN = Share(kind="user", id="dan", grant=ShareGrant.EDIT)
SHARED = DealFacts(shares=[TO_DAN])
MOVED = DealFacts(stage=Stage.PROPOSAL, probability=60, owners=["ann"])
ASSIGNED = DealFacts(owners=["ann", "bob"], team_id="emea")
LOST_FACTS = DealFacts(
    stage=Stage.CLOSED_LOST,
    outcome=LOST,
    closed_at=datetime(2026, 5, 1, tzinfo=UTC),
    lost_reason="price",
)


def test_every_arrival_order_gives_the_same_deal() -> None:
    events = [(1, CREATED), (2, MOVED), (3, ASSIGNED), (4, SHARED), (5, LOST_FACTS)]
    seen = set()
    for order in itertools.permutations(events):
        deal = ReportedDeal(uuid.UUID(int=1))
        for sequence, facts in order:
            deal.learn(facts, source=SOURCE, sequence=sequence)
            if facts is MOVED:
                deal.reached(Stage.QUALIFICATION)
        seen.add(
            (
                deal.stage,
                deal.probability,
                tuple(deal.owners),
                deal.outcome,
                deal.lost_reason,
                deal.furthest_stage,
                tuple(deal.shares),
            )
        )
    assert seen == {(Stage.CLOSED_LOST, 60, ("ann", "bob"), LOST, "price", 2, (TO_DAN,))}
