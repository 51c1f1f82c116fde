"""Who may work on which quote: the rule of its deal, as the quote service knows it."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Stage
from dealflow_common.deal_access import WRITERS, can_view_deal
from dealflow_common.errors import NotPermitted

OPEN_STAGES = frozenset({Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION})


@dataclass(eq=False)
class KnownOpportunity:
    """The quote service's projection of an opportunity, kept from its events."""

    id: UUID
    stage: Stage
    owners: list[str]
    team_id: str | None
    created_by: str
    won_quote_id: UUID | None = None

    @property
    def is_open(self) -> bool:
        return self.stage in OPEN_STAGES


def can_view(deal: KnownOpportunity, principal: Principal) -> bool:
    return can_view_deal(
        principal, owners=deal.owners, team_id=deal.team_id, created_by=deal.created_by
    )


def require_quote_work(principal: Principal) -> None:
    if not principal.has_any(*WRITERS):
        raise NotPermitted("operators may read quotes but not change them")


def require_approver(principal: Principal) -> None:
    if not principal.has_any(Role.MANAGER, Role.ADMIN):
        raise NotPermitted("only a manager or an admin approves discounts")


def require_catalog_admin(principal: Principal) -> None:
    if not principal.has_any(Role.ADMIN):
        raise NotPermitted("only an admin changes the catalog")
