"""The one rule of who sees and who works on a deal, every principal against one deal.

The deal: owned by ann and cody (co-owner), created by ann, in team `east`, shared for
read with user rita and team `audit`, for edit with user eddie and team `partners`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Share, ShareGrant
from dealflow_common.deal_access import (
    can_edit_deal,
    can_view_deal,
    holds_share,
    shares_from_document,
    shares_to_document,
)

READ, EDIT = ShareGrant.READ, ShareGrant.EDIT
SHARES = (
    Share(kind="user", id="rita", grant=READ),
    Share(kind="team", id="audit", grant=READ),
    Share(kind="user", id="eddie", grant=EDIT),
    Share(kind="team", id="partners", grant=EDIT),
)
DEAL = {"owners": ("ann", "cody"), "team_id": "east", "created_by": "ann", "shares": SHARES}


def who(user: str, *roles: Role, teams: tuple[str, ...] = ()) -> Principal:
    return Principal(user, frozenset(roles), frozenset(teams))


R, M, A, OP = Role.REP, Role.MANAGER, Role.ADMIN, Role.OPERATOR

# principal, sees it, works on it: written by hand.
MATRIX = [
    ("owner rep", who("ann", R), True, True),
    ("co-owner rep", who("cody", R, teams=("west",)), True, True),
    ("creator who left the owners", who("ann", R, teams=("west",)), True, True),
    ("rep of the deal's team", who("tom", R, teams=("east",)), True, True),
    ("manager of the deal's team", who("meg", M, teams=("east",)), True, True),
    ("rep of another team", who("wes", R, teams=("west",)), False, False),
    ("manager of another team", who("max", M, teams=("west",)), False, False),
    ("user shared for read", who("rita", R), True, False),
    ("manager shared for read", who("rita", M), True, False),
    ("member of a team shared for read", who("ada", R, teams=("audit",)), True, False),
    ("user shared for edit", who("eddie", R), True, True),
    ("member of a team shared for edit", who("pat", R, teams=("partners",)), True, True),
    ("read and edit shares: the edit one counts", who("rita", R, teams=("partners",)), True, True),
    ("admin", who("ada", A), True, True),
    ("operator", who("olga", OP), True, False),
    ("operator in the deal's team", who("olga", OP, teams=("east",)), True, False),
    ("shared for edit, but no writer role", who("eddie"), True, False),
    ("owner without any role", who("ann"), True, False),
    ("stranger", who("zed", R), False, False),
]


@pytest.mark.parametrize(
    ("principal", "sees", "works"),
    [pytest.param(p, s, w, id=name) for name, p, s, w in MATRIX],
)
def test_who_sees_and_who_works_on_a_deal(principal: Principal, sees: bool, works: bool) -> None:
    assert can_view_deal(principal, **DEAL) is sees  # type: ignore[arg-type]
    assert can_edit_deal(principal, **DEAL) is works  # type: ignore[arg-type]


def test_a_team_named_like_a_user_is_not_that_user() -> None:
    share = Share(kind="team", id="eddie", grant=EDIT)
    assert not holds_share(who("eddie", R), share)
    assert holds_share(who("bob", R, teams=("eddie",)), share)


def test_a_deal_without_a_team_is_seen_by_no_team() -> None:
    assert not can_view_deal(
        who("tom", R, teams=("east",)), owners=["ann"], team_id=None, created_by="ann"
    )


def test_the_older_call_without_shares_still_answers() -> None:
    """The order service calls it with owners, team and creator only."""
    assert can_view_deal(who("tom", M, teams=("east",)), owners=[], team_id="east", created_by="x")
    assert not can_view_deal(who("rita", R), owners=[], team_id="east", created_by="x")


def test_shares_survive_a_projection_document() -> None:
    assert shares_from_document(shares_to_document(SHARES)) == list(SHARES)
    assert shares_from_document(None) == []


users = st.sampled_from(["ann", "bob", "cody", "dora"])
teams = st.sampled_from(["east", "west", "audit"])
principals = st.builds(
    lambda user, roles, team_set: Principal(user, frozenset(roles), frozenset(team_set)),
    users,
    st.sets(st.sampled_from(list(Role))),
    st.sets(teams, max_size=2),
)
shares = st.lists(
    st.one_of(
        st.builds(
            lambda u, g: Share(kind="user", id=u, grant=g), users, st.sampled_from(ShareGrant)
        ),
        st.builds(
            lambda t, g: Share(kind="team", id=t, grant=g), teams, st.sampled_from(ShareGrant)
        ),
    ),
    max_size=4,
)
deals = st.fixed_dictionaries(
    {
        "owners": st.lists(users, max_size=2),
        "team_id": st.one_of(st.none(), teams),
        "created_by": users,
        "shares": shares,
    }
)


@given(principals, deals)
def test_whoever_works_on_a_deal_sees_it(principal: Principal, deal: dict[str, object]) -> None:
    if can_edit_deal(principal, **deal):  # type: ignore[arg-type]
        assert can_view_deal(principal, **deal)  # type: ignore[arg-type]


@given(principals, deals)
def test_read_shares_never_let_anyone_change_a_deal(
    principal: Principal, deal: dict[str, object]
) -> None:
    """Turning every edit share into a read share takes away exactly what edit shares
    gave: nobody who works on the deal only through a share keeps doing so."""
    read_only = dict(deal, shares=[s.model_copy(update={"grant": READ}) for s in deal["shares"]])  # type: ignore[attr-defined]
    without = dict(deal, shares=[])
    if can_edit_deal(principal, **read_only):  # type: ignore[arg-type]
        assert can_edit_deal(principal, **without)  # type: ignore[arg-type]


@given(principals, deals)
def test_admins_do_everything_and_operators_only_read(
    principal: Principal, deal: dict[str, object]
) -> None:
    if Role.ADMIN in principal.roles:
        assert can_edit_deal(principal, **deal)  # type: ignore[arg-type]
    if principal.roles == {Role.OPERATOR}:
        assert can_view_deal(principal, **deal)  # type: ignore[arg-type]
        assert not can_edit_deal(principal, **deal)  # type: ignore[arg-type]
