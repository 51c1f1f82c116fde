"""Who may see and change what: the deal's rule (libs/common deal_access) on the
projection, plus the roles each kind of change needs."""

from __future__ import annotations

from dealflow_common.auth import Principal, Role
from dealflow_common.deal_access import WRITERS, can_edit_deal, can_view_deal
from dealflow_common.errors import NotPermitted
from dealflow_sequence.domain.deal import KnownDeal


def can_view(deal: KnownDeal, principal: Principal) -> bool:
    return can_view_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    )


def can_work_on(deal: KnownDeal, principal: Principal) -> bool:
    return can_edit_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    )


def require_deal_work(deal: KnownDeal, principal: Principal) -> None:
    """Tasks and hand enrollments are work on the deal: whoever only reads it (a `read`
    share) sees them but does not change them. Operators keep what DESIGN.md section 5
    gives them: enrolling, pausing, resuming and cancelling by hand."""
    if principal.has_any(Role.OPERATOR) or can_work_on(deal, principal):
        return
    raise NotPermitted(f"you may only read opportunity {deal.id} and its follow-ups")


def require_sequence_author(principal: Principal) -> None:
    if not principal.has_any(Role.MANAGER, Role.ADMIN):
        raise NotPermitted("only a manager or an admin defines sequences")


def require_enrollment_work(principal: Principal) -> None:
    """DESIGN.md section 5: operators and reps enroll, pause, resume and cancel by hand."""
    if not principal.has_any(*WRITERS, Role.OPERATOR):
        raise NotPermitted("this needs one of the roles: rep, manager, admin, operator")


def require_task_work(principal: Principal) -> None:
    if not principal.has_any(*WRITERS):
        raise NotPermitted("operators may read tasks but not change them")
