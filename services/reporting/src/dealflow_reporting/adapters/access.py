"""`can_view_deal` as a SQL condition, for figures summed in the database.

The rule itself is `dealflow_common.deal_access.can_view_deal`: admins and operators see
every deal; anyone else the deals they own, created, that belong to one of their teams,
or that are shared with them or one of their teams (whatever the grant). Aggregates
cannot call it row by row without reading every deal into Python, so this mirrors it in
SQL; `tests/component/test_access.py` checks both agree on a table of cases, so a change
of the rule that this does not follow fails there.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import ColumnElement, and_, exists, or_, select

from dealflow_common.auth import Principal
from dealflow_reporting.adapters.tables import deal_owners, deal_shares, deals

PERSONAL_PARTS: Final = ("owned", "created", "shared")
"""The parts of a caller's deals outside their teams, in the order they exclude each
other: a deal owned is only in "owned", one created and not owned only in "created", one
shared and neither only in "shared"."""


def _owned(principal: Principal, alias: str) -> ColumnElement[bool]:
    # An alias, correlated to `deals` only: a report grouped by owner joins
    # `deal_owners` itself, and the two must not be taken for one.
    owner = deal_owners.alias(alias)
    return exists(
        select(owner.c.opportunity_id)
        .where(owner.c.opportunity_id == deals.c.opportunity_id, owner.c.owner == principal.user_id)
        .correlate(deals)
    )


def _shared(principal: Principal, alias: str) -> ColumnElement[bool]:
    """Shared with the caller, or with one of their teams (any grant)."""
    share = deal_shares.alias(alias)
    holders = [and_(share.c.kind == "user", share.c.holder_id == principal.user_id)]
    if principal.teams:
        holders.append(and_(share.c.kind == "team", share.c.holder_id.in_(sorted(principal.teams))))
    return exists(
        select(share.c.opportunity_id)
        .where(share.c.opportunity_id == deals.c.opportunity_id, or_(*holders))
        .correlate(deals)
    )


def visible_deals(principal: Principal) -> ColumnElement[bool] | None:
    """The condition on `deals` rows the principal may see; None when they see all."""
    if principal.sees_everything:
        return None
    conditions: list[ColumnElement[bool]] = [
        _owned(principal, "visible_owner"),
        deals.c.created_by == principal.user_id,
        _shared(principal, "visible_share"),
    ]
    if principal.teams:
        conditions.append(deals.c.team_id.in_(sorted(principal.teams)))
    return or_(*conditions)


def own_deals_outside_teams(principal: Principal, part: str) -> ColumnElement[bool]:
    """The deals a principal sees that are not in one of their teams, in three disjoint
    parts (`PERSONAL_PARTS`): those they own (`part="owned"`), those they created
    without owning (`"created"`), and those shared with them or one of their teams that
    they neither own nor created (`"shared"`). With `team_id IN teams` they split
    `visible_deals` in four disjoint parts, so that the teams' part can be read from the
    kept sums (keyed by team), each other part is one indexed lookup (an OR of them is a
    scan of every deal), and no deal is counted twice."""
    if part not in PERSONAL_PARTS:
        raise ValueError(f"unknown part of a caller's deals: {part!r}")
    owned = _owned(principal, "own_owner")
    created = deals.c.created_by == principal.user_id
    if part == "owned":
        mine = owned
    elif part == "created":
        mine = and_(created, ~owned)
    else:
        mine = and_(_shared(principal, "own_share"), ~created, ~owned)
    if not principal.teams:
        return mine
    return and_(
        mine, or_(deals.c.team_id.is_(None), deals.c.team_id.not_in(sorted(principal.teams)))
    )
