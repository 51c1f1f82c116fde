"""The Opportunity aggregate's rules, one behaviour per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Contact,
    Customer,
    NoteReason,
    Share,
    ShareGrant,
    Stage,
)
from dealflow_common.errors import StaleVersion
from dealflow_opportunity.domain.errors import (
    ContactNotForIndividuals,
    ExpectedCloseDateInPast,
    LastOwnerCannotLeave,
    LostReasonRequired,
    NoOwnerNorTeam,
    NotAnOwner,
    OpportunityClosed,
)
from dealflow_opportunity.domain.model import Opportunity, OpportunityChanges

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ACME = Customer(kind="organization", id="acme", name="ACME Corp")
OpportunityAt = Callable[..., Opportunity]


def open_deal(**overrides: object) -> Opportunity:
    fields: dict[str, object] = {
        "title": "Fleet renewal",
        "customer": ACME,
        "value": Money.of("50000", "USD"),
        "by": "alice",
        "now": NOW,
    }
    fields.update(overrides)
    return Opportunity.open(**fields)  # type: ignore[arg-type]


def test_a_new_opportunity_is_a_lead_at_ten_percent_owned_by_its_creator() -> None:
    deal = open_deal()
    assert (deal.stage, deal.probability, deal.version, deal.owners) == (
        Stage.LEAD,
        10,
        1,
        ["alice"],
    )
    assert [e.event_type for e in deal.events] == ["opportunity.created"]
    assert deal.new_history[0].from_stage is None
    assert deal.new_history[0].to_stage == Stage.LEAD


def test_an_explicit_probability_is_kept_on_opening() -> None:
    assert open_deal(probability=25).probability == 25


def test_a_deal_opened_for_a_team_waits_in_its_queue() -> None:
    deal = open_deal(team_id="emea", owners=[])
    assert deal.owners == []
    assert deal.team_id == "emea"
    assert open_deal(team_id="emea").owners == ["alice"]


def test_a_deal_needs_an_owner_or_a_team() -> None:
    with pytest.raises(NoOwnerNorTeam):
        open_deal(owners=[])


def test_the_expected_close_date_cannot_be_in_the_past() -> None:
    with pytest.raises(ExpectedCloseDateInPast):
        open_deal(expected_close_date=date(2026, 11, 23))
    assert open_deal(expected_close_date=date(2026, 11, 24)).expected_close_date


def test_an_individual_customer_has_no_separate_contact() -> None:
    with pytest.raises(ContactNotForIndividuals):
        open_deal(
            customer=Customer(kind="individual", id="p1", name="Bob"),
            contact=Contact(name="Someone else"),
        )


def test_a_move_without_probability_takes_the_stage_default(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD)
    deal.move_to(Stage.QUALIFICATION, "bob", NOW)
    assert deal.probability == 30


def test_a_move_with_probability_keeps_it(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD)
    deal.move_to(Stage.QUALIFICATION, "bob", NOW, probability=45)
    assert deal.probability == 45


def test_closing_fixes_the_probability(opportunity_at: OpportunityAt) -> None:
    won = opportunity_at(Stage.NEGOTIATION)
    won.move_to(Stage.CLOSED_WON, "bob", NOW, probability=42)
    lost = opportunity_at(Stage.PROPOSAL)
    lost.lose("went with a competitor", "bob", NOW)
    assert (won.probability, lost.probability) == (100, 0)
    assert won.closed_at == NOW == lost.closed_at


def test_losing_needs_a_reason(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    with pytest.raises(LostReasonRequired):
        deal.move_to(Stage.CLOSED_LOST, "bob", NOW)
    with pytest.raises(LostReasonRequired):
        deal.lose("   ", "bob", NOW)
    assert deal.stage == Stage.PROPOSAL
    assert deal.events == []


def test_losing_with_a_note_is_one_new_version(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL, version=4)
    deal.lose("price", "bob", NOW, note="They found it 20% cheaper")
    assert deal.version == 5
    assert [e.event_type for e in deal.events] == [
        "opportunity.stage_changed",
        "opportunity.note_added",
        "opportunity.lost",
    ]
    assert deal.new_notes[0].reason == NoteReason.LOST
    assert deal.lost_reason == "price"


def test_days_in_the_previous_stage_are_measured(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.QUALIFICATION, entered=NOW - timedelta(days=2, hours=12))
    deal.move_to(Stage.PROPOSAL, "bob", NOW)
    entry = deal.new_history[-1]
    assert entry.days_in_previous_stage == 2.5
    assert (entry.from_stage, entry.to_stage, entry.changed_by) == (
        Stage.QUALIFICATION,
        Stage.PROPOSAL,
        "bob",
    )
    assert entry.owners == ("alice",)


def test_an_update_records_only_what_changed(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, version=2)
    deal.update(
        OpportunityChanges(title="Fleet renewal", value=Money.of("60000", "USD")), "bob", NOW
    )
    assert deal.version == 3
    (event,) = deal.events
    assert event.changed_fields == ["value"]  # type: ignore[attr-defined]


def test_an_update_that_changes_nothing_is_no_new_version(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, version=2)
    deal.update(OpportunityChanges(title="Fleet renewal"), "bob", NOW)
    assert deal.version == 2
    assert deal.events == []


def test_a_closed_deal_cannot_be_updated_but_takes_notes(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.CLOSED_WON)
    with pytest.raises(OpportunityClosed):
        deal.update(OpportunityChanges(title="Other"), "bob", NOW)
    deal.add_note(NoteReason.GENERAL, "Customer happy", "bob", NOW)
    assert [e.event_type for e in deal.events] == ["opportunity.note_added"]


def test_a_stale_version_is_refused(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, version=3)
    with pytest.raises(StaleVersion):
        deal.check_version(2)
    deal.check_version(3)
    deal.check_version(None)


def test_owners_can_be_added_and_removed(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, owners=["alice"])
    deal.assign("carol", "manager-1", NOW)
    deal.unassign("alice", "manager-1", NOW)
    assert deal.owners == ["carol"]
    assert [a.action for a in deal.new_assignments] == ["assigned", "unassigned"]


def test_the_last_owner_cannot_leave_a_deal_without_team(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, owners=["alice"])
    with pytest.raises(LastOwnerCannotLeave):
        deal.unassign("alice", "alice", NOW)
    with pytest.raises(NotAnOwner):
        deal.unassign("zed", "alice", NOW)


def test_a_team_deal_is_claimed_by_a_rep(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, owners=["alice"])
    deal.assign_team("emea", "manager-1", NOW)
    assert (deal.owners, deal.team_id) == ([], "emea")
    deal.claim(Principal("dave", frozenset({Role.REP}), frozenset({"emea"})), NOW)
    assert deal.owners == ["dave"]
    assert [a.action for a in deal.new_assignments] == ["team_assigned", "claimed"]


def test_the_first_accepted_quote_wins_and_a_second_is_refused(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert deal.accept_quote(first, "system:quote", NOW) is True
    assert deal.accept_quote(second, "system:quote", NOW) is False
    assert deal.won_quote_id == first
    assert [e.event_type for e in deal.events] == [
        "opportunity.stage_changed",
        "opportunity.won",
        "opportunity.acceptance_refused",
    ]


def test_the_winning_quote_asking_again_is_answered_won_again_changing_nothing(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    winner = uuid.uuid4()
    deal.accept_quote(winner, "system:quote", NOW)
    version, first_won, history = deal.version, deal.events[-1], list(deal.new_history)
    deal.events.clear()

    later = NOW + timedelta(minutes=3)
    assert deal.accept_quote(winner, "system:quote", later, answer_by=NOW) is True

    assert (deal.stage, deal.won_quote_id, deal.version) == (Stage.CLOSED_WON, winner, version)
    (again,) = deal.events
    assert again.event_type == "opportunity.won"
    assert again.repeated is True  # type: ignore[attr-defined]
    assert again.won_at == first_won.won_at == NOW  # type: ignore[attr-defined]
    assert deal.new_history == history  # no second stage move


def test_a_request_read_after_its_answer_by_is_neither_won_nor_refused(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    version = deal.version

    assert (
        deal.accept_quote(uuid.uuid4(), "system:quote", NOW, answer_by=NOW - timedelta(seconds=1))
        is False
    )

    assert (deal.stage, deal.won_quote_id, deal.version, deal.events) == (
        Stage.PROPOSAL,
        None,
        version,
        [],
    )
    assert deal.accept_quote(uuid.uuid4(), "system:quote", NOW, answer_by=NOW) is True


def test_the_order_is_recorded_once(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.CLOSED_WON)
    first, second = uuid.uuid4(), uuid.uuid4()
    deal.record_order(first, NOW)
    deal.record_order(second, NOW)
    assert deal.order_id == first
    assert len(deal.events) == 1


def test_a_snapshot_is_changed_apart_from_its_original(opportunity_at: OpportunityAt) -> None:
    """What `recent` keeps and hands out: every list and map a command may change in
    place is the snapshot's own, and it starts with nothing pending."""
    deal = opportunity_at(Stage.QUALIFICATION, owners=["alice"])
    deal.move_to(Stage.PROPOSAL, by="alice", now=NOW)
    kept = deal.state()
    twin = deal.snapshot()
    assert twin.state() == kept
    assert (twin.events, twin.new_history, twin.version_bumped) == ([], [], False)
    for name, value in vars(deal).items():
        if isinstance(value, list | dict | set) and value:
            assert getattr(twin, name) is not value, name

    twin.assign("carol", "manager-1", NOW)
    twin.share(Share(kind="team", id="apac", grant=ShareGrant.EDIT), "alice", NOW)
    twin.move_to(Stage.NEGOTIATION, by="alice", now=NOW)
    assert deal.state() == kept
    assert twin.version == deal.version + 1  # the snapshot's change moves its version once
