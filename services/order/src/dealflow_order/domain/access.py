"""Who may see an order: the rule of its deal (libs/common deal_access), applied to
the order service's projection of the deal's access keys.

The projection is kept from `dealflow.opportunity.events`, each field moving forward
only by the envelope sequence (`AppliedSequences`), so a late `opportunity.assigned`
never gives an order back to the rep it was taken from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.opportunity import Share
from dealflow_common.deal_access import WRITERS, can_edit_deal, can_view_deal
from dealflow_common.errors import NotPermitted
from dealflow_common.messaging.projection import AppliedSequences


class DealFacts(TypedDict, total=False):
    """What one opportunity event says: created and updated carry every field,
    stage_changed the owners, assigned the owners and team, shared and unshared the
    shares."""

    owners: list[str]
    team_id: str | None
    created_by: str
    customer_id: str
    customer_name: str
    shares: list[Share]


@dataclass(eq=False)
class KnownDeal:
    """The access keys of a deal (and whom to bill), as its events told them."""

    id: UUID
    owners: list[str]
    team_id: str | None
    created_by: str
    customer_id: str | None = None
    customer_name: str | None = None
    shares: list[Share] = field(default_factory=list)
    sequences: AppliedSequences = field(default_factory=AppliedSequences)

    @classmethod
    def unseen(cls, opportunity_id: UUID) -> KnownDeal:
        """A deal none of whose events arrived yet: only those who see every deal see it."""
        return cls(opportunity_id, [], None, "")

    def learn(self, facts: DealFacts, *, source: str, sequence: int) -> bool:
        """Take the facts newer than those held, field by field; True if any was taken."""
        carried: Mapping[str, object] = facts
        verdict = self.sequences.offer(source=source, sequence=sequence, carried=carried)
        for name in verdict.fields:
            setattr(self, name, carried[name])
        self.sequences = verdict.applied
        return bool(verdict.fields)


def can_view(deal: KnownDeal, principal: Principal) -> bool:
    return can_view_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    )


def require_order_work(deal: KnownDeal, principal: Principal) -> None:
    """Payments, refunds, invoices and cancellations: whoever may work on the deal
    (reps and managers who see it other than through a read share, and admins)."""
    if not principal.has_any(*WRITERS):
        raise NotPermitted("operators may read orders but not change them")
    if not can_edit_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    ):
        raise NotPermitted("the deal is shared with you to read only")
