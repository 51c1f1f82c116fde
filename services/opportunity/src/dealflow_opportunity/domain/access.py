"""Who may see and change an opportunity.

Seeing and working on a deal is the rule of libs/common `deal_access`, applied to the
deal's owners, team, creator and shares. On top of it: only managers and admins hand
deals to other people or teams; an owner may bring in a co-owner; whoever may work on
a deal may share it.
"""

from __future__ import annotations

from dealflow_common.auth import Principal, Role
from dealflow_common.deal_access import WRITERS, can_edit_deal, can_view_deal
from dealflow_common.errors import NotPermitted
from dealflow_opportunity.domain.model import Opportunity

__all__ = [
    "WRITERS",
    "can_edit",
    "can_view",
    "require_assignment",
    "require_change",
    "require_claim",
    "require_team_assignment",
]


def can_view(opportunity: Opportunity, principal: Principal) -> bool:
    return can_view_deal(
        principal,
        owners=opportunity.owners,
        team_id=opportunity.team_id,
        created_by=opportunity.created_by,
        shares=opportunity.shares,
    )


def can_edit(opportunity: Opportunity, principal: Principal) -> bool:
    return can_edit_deal(
        principal,
        owners=opportunity.owners,
        team_id=opportunity.team_id,
        created_by=opportunity.created_by,
        shares=opportunity.shares,
    )


def require_change(opportunity: Opportunity, principal: Principal) -> None:
    if not principal.has_any(*WRITERS):
        raise NotPermitted("operators may read deals but not change them")
    if not can_edit(opportunity, principal):
        raise NotPermitted(
            "you may only read this deal: it is changed by its owners, its creator, the "
            "managers of its team, admins and whom it is shared with for edit"
        )


def require_assignment(opportunity: Opportunity, principal: Principal, user_id: str) -> None:
    require_change(opportunity, principal)
    if principal.has_any(Role.MANAGER, Role.ADMIN):
        return
    if principal.user_id in opportunity.owners:
        return  # an owner brings in or drops a co-owner
    raise NotPermitted(f"only a manager, an admin or an owner may change who owns it ({user_id})")


def require_team_assignment(opportunity: Opportunity, principal: Principal) -> None:
    require_change(opportunity, principal)
    if not principal.has_any(Role.MANAGER, Role.ADMIN):
        raise NotPermitted("only a manager or an admin hands a deal to a team")


def require_claim(opportunity: Opportunity, principal: Principal) -> None:
    if not principal.has_any(Role.REP, Role.MANAGER):
        raise NotPermitted("only reps and managers claim deals")
    if opportunity.team_id is None or opportunity.team_id not in principal.teams:
        raise NotPermitted("you can claim only deals of your teams")
