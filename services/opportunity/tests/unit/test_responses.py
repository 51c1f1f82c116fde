"""The deal's state (what its events carry) and the API's view of it: built from its
fields without validating them again, and the same as validating them would give."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Address,
    Competitor,
    Contact,
    Customer,
    DealContact,
    DecisionIssue,
    NextAction,
    OpportunityState,
    Share,
    ShareGrant,
    Stage,
)
from dealflow_opportunity.api.routes import to_response
from dealflow_opportunity.api.schemas import OpportunityResponse
from dealflow_opportunity.domain.model import Opportunity

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def a_deal_with_every_part() -> Opportunity:
    deal = Opportunity.open(
        title="Fleet renewal",
        customer=Customer(kind="organization", id="acme", name="ACME Corp"),
        value=Money.of("50000.5", "USD"),
        by="alice",
        now=NOW,
        description="Forty vans",
        contact=Contact(name="Bo", email="bo@acme.example"),
        contact_address=Address(lines=["1 Main St"], city="Springfield", country="US"),
        expected_close_date=date(2026, 12, 20),
        next_action=NextAction(date=date(2026, 12, 1), note="Call Bo"),
        team_id="emea",
    )
    deal.shares = [Share(kind="team", id="apac", grant=ShareGrant.READ)]
    deal.owners = ["alice", "bob"]
    deal.competitors = [Competitor(id=uuid.uuid4(), name="Rival", strengths="price")]
    deal.decision_issues = [DecisionIssue(id=uuid.uuid4(), description="Budget sign-off")]
    deal.contacts = [DealContact(id=uuid.uuid4(), name="Cy", role="champion")]
    deal.custom_fields = {"region": "north", "budget": Money.of("1200", "EUR")}
    deal.move_to(Stage.QUALIFICATION, "alice", NOW)
    return deal


def test_the_response_is_what_validating_the_state_again_would_give() -> None:
    deal = a_deal_with_every_part()
    source = deal.next_action_source
    validated = OpportunityResponse(
        **deal.state().model_dump(),
        allowed_moves=deal.allowed_moves(),
        next_action_source=source.value if source else None,
    )

    built = to_response(deal)

    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == set(OpportunityResponse.model_fields)


def test_the_state_is_what_validating_it_would_give() -> None:
    deal = a_deal_with_every_part()
    state = deal.state()

    validated = OpportunityState.model_validate(state.model_dump())

    assert state == validated
    assert state.model_dump_json() == validated.model_dump_json()


def test_the_response_keeps_its_own_lists() -> None:
    deal = a_deal_with_every_part()
    built = to_response(deal)

    deal.owners.append("carol")
    deal.shares.clear()
    deal.custom_fields["region"] = "south"

    assert built.owners == ["alice", "bob"]
    assert len(built.shares) == 1
    assert built.custom_fields["region"] == "north"
