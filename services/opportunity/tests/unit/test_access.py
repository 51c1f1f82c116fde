"""Who sees and changes which deal."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Stage
from dealflow_common.errors import NotPermitted
from dealflow_opportunity.domain import access
from dealflow_opportunity.domain.model import Opportunity

OpportunityAt = Callable[..., Opportunity]


def person(user: str, *roles: Role, teams: tuple[str, ...] = ()) -> Principal:
    return Principal(user, frozenset(roles), frozenset(teams))


def test_a_rep_sees_own_created_and_team_deals(opportunity_at: OpportunityAt) -> None:
    rep = person("dave", Role.REP, teams=("emea",))
    assert access.can_view(opportunity_at(owners=["dave"]), rep)
    assert access.can_view(opportunity_at(owners=["x"], created_by="dave"), rep)
    assert access.can_view(opportunity_at(owners=[], team_id="emea"), rep)
    assert not access.can_view(opportunity_at(owners=["x"], team_id="apac"), rep)


def test_operators_see_everything_and_change_nothing(opportunity_at: OpportunityAt) -> None:
    operator = person("ops", Role.OPERATOR)
    deal = opportunity_at(owners=["x"])
    assert access.can_view(deal, operator)
    with pytest.raises(NotPermitted):
        access.require_change(deal, operator)


def test_only_managers_hand_deals_to_teams(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(owners=["dave"], team_id="emea")
    with pytest.raises(NotPermitted):
        access.require_team_assignment(deal, person("dave", Role.REP, teams=("emea",)))
    access.require_team_assignment(deal, person("mia", Role.MANAGER, teams=("emea",)))


def test_an_owner_may_bring_in_a_co_owner_but_a_team_mate_may_not(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(owners=["dave"], team_id="emea")
    access.require_assignment(deal, person("dave", Role.REP, teams=("emea",)), "erin")
    with pytest.raises(NotPermitted):
        access.require_assignment(deal, person("erin", Role.REP, teams=("emea",)), "erin")


def test_claims_come_from_the_claimers_teams(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.LEAD, owners=[], team_id="emea")
    access.require_claim(deal, person("dave", Role.REP, teams=("emea",)))
    with pytest.raises(NotPermitted):
        access.require_claim(deal, person("zoe", Role.REP, teams=("apac",)))
