"""`can_view_deal` as a SQL condition, for figures summed in the database.

The rule itself is `dealflow_common.deal_access.can_view_deal`: admins and operators see
every deal; anyone else the deals they own, created, or that belong to one of their
teams. Aggregates cannot call it row by row without reading every deal into Python, so
this mirrors it in SQL; `tests/component/test_access.py` checks both agree on a table
of cases, so a change of the rule that this does not follow fails there.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, or_, select

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
