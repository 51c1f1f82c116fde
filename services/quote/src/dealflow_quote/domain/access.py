"""Who may work on which quote: the rule of its deal, as the quote service knows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict
from uuid import UUID

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Share, Stage
from dealflow_common.copying import shallow_copy
from dealflow_common.deal_access import WRITERS, can_edit_deal, can_view_deal
from dealflow_common.errors import NotPermitted
from dealflow_common.messaging.projection import AppliedSequences

OPEN_STAGES = frozenset({Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION})

# How far along its life a deal is: open, closed, purge pending, purged. The copy's stage
# never goes back along it (`learn`). Events already never move a closed deal back (the
# opportunity service does not reopen one, and sequences keep older events out); the
# ranking is for `purge_pending`, which no opportunity event sets: the quote service
# marks it itself when asked to purge (`mark_purge_pending`), so no sequence guards it.
_PROGRESS = {
    **dict.fromkeys(OPEN_STAGES, 0),
    Stage.CLOSED_WON: 1,
    Stage.CLOSED_LOST: 1,
    Stage.PURGE_PENDING: 2,
    Stage.PURGED: 3,
}


class DealFacts(TypedDict, total=False):
    """What one opportunity event says about its deal: created and updated carry every
    field, the others a few (stage_changed: stage and owners; assigned: owners and team;
    won: stage and won quote; lost: stage; shared and unshared: the shares)."""

    stage: Stage
    owners: list[str]
    team_id: str | None
    created_by: str
    won_quote_id: UUID | None
    shares: list[Share]


@dataclass(eq=False)
class KnownOpportunity:
    """The quote service's projection of an opportunity, kept from its events."""

    id: UUID
    stage: Stage
    owners: list[str]
    team_id: str | None
    created_by: str
    won_quote_id: UUID | None = None
    shares: list[Share] = field(default_factory=list)
    sequences: AppliedSequences = field(default_factory=AppliedSequences)
    """Per field, the sequence of the opportunity event that last set it."""

    @classmethod
    def unseen(cls, opportunity_id: UUID) -> KnownOpportunity:
        """An opportunity whose creation this service never saw (it predates the topic's
        retention), to be tracked from what its later events say."""
        return cls(opportunity_id, Stage.LEAD, [], None, "")

    @property
    def is_open(self) -> bool:
        return self.stage in OPEN_STAGES

    def snapshot(self) -> KnownOpportunity:
        """A copy to change apart from this one: its lists are its own (what they hold
        is immutable, as `sequences` is)."""
        twin = shallow_copy(self)
        twin.owners = list(self.owners)
        twin.shares = list(self.shares)
        return twin

    def learn(self, facts: DealFacts, *, source: str, sequence: int) -> bool:
        """Take those of the facts that are newer than the ones held, field by field, so
        that a late or re-sent event never moves the deal back; True if any was taken.
        A stage behind the one held is not taken whatever its sequence: an open stage
        never reopens a closed deal, nor does any event take a deal out of purge."""
        carried: Mapping[str, object] = facts
        if "stage" in facts and _PROGRESS[facts["stage"]] < _PROGRESS[self.stage]:
            carried = {name: value for name, value in facts.items() if name != "stage"}
        verdict = self.sequences.offer(source=source, sequence=sequence, carried=carried)
        for name in verdict.fields:
            setattr(self, name, carried[name])
        self.sequences = verdict.applied
        return bool(verdict.fields)

    def mark_purge_pending(self) -> None:
        """The purge agent asked for the deal's quotes: from now on it is `purge_pending`
        here, which no opportunity event undoes (see `learn`). A fact of this service's
        own, not an opportunity event's: it has no sequence and leaves `sequences` alone."""
        if _PROGRESS[self.stage] < _PROGRESS[Stage.PURGE_PENDING]:
            self.stage = Stage.PURGE_PENDING


def can_view(deal: KnownOpportunity, principal: Principal) -> bool:
    return can_view_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    )


def require_deal_work(deal: KnownOpportunity, principal: Principal) -> None:
    """Quoting a deal is working on it: the deal's rule of who may change it."""
    if not can_edit_deal(
        principal,
        owners=deal.owners,
        team_id=deal.team_id,
        created_by=deal.created_by,
        shares=deal.shares,
    ):
        raise NotPermitted(f"you may only read opportunity {deal.id} and its quotes")


def require_quote_work(principal: Principal) -> None:
    if not principal.has_any(*WRITERS):
        raise NotPermitted("operators may read quotes but not change them")


def require_approver(principal: Principal) -> None:
    if not principal.has_any(Role.MANAGER, Role.ADMIN):
        raise NotPermitted("only a manager or an admin approves discounts")


def require_catalog_admin(principal: Principal) -> None:
    if not principal.has_any(Role.ADMIN):
        raise NotPermitted("only an admin changes the catalog")
