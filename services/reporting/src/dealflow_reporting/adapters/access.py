"""`can_view_deal` as a SQL condition, for figures summed in the database.

The rule itself is `dealflow_common.deal_access.can_view_deal`: admins and operators see
every deal; anyone else the deals they own, created, or that belong to one of their
teams. Aggregates cannot call it row by row without reading every deal into Python, so
this mirrors it in SQL; `tests/component/test_access.py` checks both agree on a table
of cases, so a change of the rule that this does not follow fails there.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, or_, select

from dealflow_common.auth import Principal
from dealflow_reporting.adapters.tables import deal_owners, deals


def visible_deals(principal: Principal) -> ColumnElement[bool] | None:
    """The condition on `deals` rows the principal may see; None when they see all."""
    if principal.sees_everything:
        return None
    # An alias, correlated to `deals` only: a report grouped by owner joins
    # `deal_owners` itself, and the two must not be taken for one.
    owner = deal_owners.alias("visible_owner")
    owned = exists(
        select(owner.c.opportunity_id)
        .where(owner.c.opportunity_id == deals.c.opportunity_id, owner.c.owner == principal.user_id)
        .correlate(deals)
    )
    conditions: list[ColumnElement[bool]] = [owned, deals.c.created_by == principal.user_id]
    if principal.teams:
        conditions.append(deals.c.team_id.in_(sorted(principal.teams)))
    return or_(*conditions)


def own_deals_outside_teams(principal: Principal, part: str) -> ColumnElement[bool]:
    """The deals a principal sees that are not in one of their teams, in two disjoint
    parts: those they own (`part="owned"`), and those they created without owning
    (`"created"`). With `team_id IN teams` they split `visible_deals` in three disjoint
    parts, so that the teams' part can be read from the kept sums (keyed by team), and
    each other part is one indexed lookup (an OR of them is a scan of every deal)."""
    owner = deal_owners.alias("own_owner")
    owned = exists(
        select(owner.c.opportunity_id)
        .where(owner.c.opportunity_id == deals.c.opportunity_id, owner.c.owner == principal.user_id)
        .correlate(deals)
    )
    mine = owned if part == "owned" else and_(deals.c.created_by == principal.user_id, ~owned)
    if not principal.teams:
        return mine
    return and_(
        mine, or_(deals.c.team_id.is_(None), deals.c.team_id.not_in(sorted(principal.teams)))
    )
