"""The quote service's copy of a deal: its stage never goes back along open, closed,
purge_pending, purged, whatever an event's sequence (`purge_pending` is a mark of the
quote service's own, with no sequence of the opportunity service's to guard it)."""

from __future__ import annotations

import uuid

from dealflow_common.contracts.opportunity import Stage
from dealflow_quote.domain.access import DealFacts, KnownOpportunity

SOURCE = "/dealflow/opportunity"


def test_no_event_takes_a_deal_out_of_purge_but_its_other_facts_are_taken() -> None:
    deal = KnownOpportunity.unseen(uuid.uuid4())
    deal.learn(DealFacts(stage=Stage.NEGOTIATION, owners=["alice"]), source=SOURCE, sequence=1)
    deal.mark_purge_pending()

    for sequence, stage, owner in ((8, Stage.PROPOSAL, "bob"), (9, Stage.CLOSED_WON, "carol")):
        facts = DealFacts(stage=stage, owners=[owner])
        assert deal.learn(facts, source=SOURCE, sequence=sequence) is True
        assert (deal.stage, deal.owners) == (Stage.PURGE_PENDING, [owner])
    assert deal.sequences.by_field["stage"] == 1


def test_an_open_stage_never_reopens_a_closed_deal_but_a_purge_moves_it_on() -> None:
    deal = KnownOpportunity.unseen(uuid.uuid4())
    deal.learn(DealFacts(stage=Stage.CLOSED_LOST), source=SOURCE, sequence=5)
    assert deal.learn(DealFacts(stage=Stage.LEAD), source=SOURCE, sequence=6) is False
    assert deal.stage == Stage.CLOSED_LOST
    assert deal.learn(DealFacts(stage=Stage.PURGED), source=SOURCE, sequence=7) is True
    deal.mark_purge_pending()
    assert deal.stage == Stage.PURGED


def test_a_snapshot_learns_apart_from_its_original() -> None:
    """What `recent` keeps and hands out: its lists are its own."""
    deal = KnownOpportunity.unseen(uuid.uuid4())
    deal.learn(DealFacts(stage=Stage.PROPOSAL, owners=["alice"]), source=SOURCE, sequence=1)
    twin = deal.snapshot()
    assert vars(twin) == vars(deal)
    assert twin.owners is not deal.owners
    assert twin.shares is not deal.shares

    twin.owners.append("bob")
    twin.learn(DealFacts(stage=Stage.CLOSED_WON), source=SOURCE, sequence=2)
    assert (deal.stage, deal.owners, deal.sequences.by_field) == (
        Stage.PROPOSAL,
        ["alice"],
        {"stage": 1, "owners": 1},
    )
