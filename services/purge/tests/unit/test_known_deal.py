"""The agent's copy of a deal moves forward only, field by field, by the envelope sequence:
a late record never reopens a closed deal nor un-purges a purged one, and what a late
partial event says is kept where no newer event said otherwise."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from dealflow_common.contracts.opportunity import Stage
from dealflow_purge.domain.eligibility import DealFacts, KnownDeal

SOURCE = "/dealflow/opportunity"
CLOSED_AT = datetime(2026, 10, 1, tzinfo=UTC)

EVENTS: list[tuple[int, DealFacts]] = [
    (1, DealFacts(stage=Stage.LEAD, closed_at=None, owners=("alice",), team_id="emea")),
    (2, DealFacts(owners=("bob",), team_id="apac")),
    (3, DealFacts(stage=Stage.CLOSED_LOST, closed_at=CLOSED_AT)),
    (4, DealFacts(stage=Stage.PURGED)),
]


def applied(order: list[tuple[int, DealFacts]]) -> KnownDeal:
    deal = KnownDeal.unseen(uuid.UUID(int=1))
    for sequence, facts in order:
        deal = deal.learn(facts, source=SOURCE, sequence=sequence) or deal
    return deal


def test_any_order_of_the_same_events_leaves_the_same_copy() -> None:
    expected = KnownDeal(uuid.UUID(int=1), Stage.PURGED, CLOSED_AT, ("bob",), "apac")
    for order in itertools.permutations(EVENTS):
        assert applied(list(order)) == expected, order


def test_an_event_taking_nothing_new_changes_nothing() -> None:
    deal = applied(EVENTS)
    assert deal.learn(EVENTS[2][1], source=SOURCE, sequence=3) is None
    assert deal.learn(DealFacts(stage=Stage.NEGOTIATION), source=SOURCE, sequence=2) is None
