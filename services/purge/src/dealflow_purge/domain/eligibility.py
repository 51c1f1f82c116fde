"""Which closed deals may be purged now (DESIGN.md section 6).

Eligible: closed won or lost, closed longer ago than the policy keeps that outcome,
and not on hold. Anything else is kept, and the reason says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict
from uuid import UUID

from dealflow_common.contracts.opportunity import Share, Stage
from dealflow_common.messaging.projection import AppliedSequences
from dealflow_purge.domain.policy import PurgePolicy

CLOSED = frozenset({Stage.CLOSED_WON, Stage.CLOSED_LOST})


class Kept(StrEnum):
    """Why a deal is not purged now."""

    NOT_CLOSED = "not_closed"
    WITHIN_RETENTION = "within_retention"
    ON_HOLD = "on_hold"
    ALREADY_PURGED = "already_purged"


class DealFacts(TypedDict, total=False):
    """What one opportunity event says about its deal: created and updated carry every
    field, the others a few (stage_changed: stage, closed_at and owners; assigned:
    owners and team; won and lost: stage and closed_at; purged: stage; shared and
    unshared: the shares)."""

    stage: Stage
    closed_at: datetime | None
    owners: tuple[str, ...]
    team_id: str | None
    created_by: str
    shares: tuple[Share, ...]


@dataclass(frozen=True)
class KnownDeal:
    """The purge service's projection of an opportunity, kept from its events."""

    opportunity_id: UUID
    stage: Stage
    closed_at: datetime | None
    owners: tuple[str, ...] = ()
    team_id: str | None = None
    sequences: AppliedSequences = field(default_factory=AppliedSequences, compare=False)
    """Per field, the sequence of the opportunity event that last set it."""
    created_by: str = ""
    shares: tuple[Share, ...] = ()
    """With owners, team and creator: the access keys of `deal_access`, so the purge
    service answers who may see a deal as every other service does."""

    @classmethod
    def unseen(cls, opportunity_id: UUID) -> KnownDeal:
        """A deal whose creation this service never saw, to be tracked from its events."""
        return cls(opportunity_id, Stage.LEAD, None)

    def learn(self, facts: DealFacts, *, source: str, sequence: int) -> KnownDeal | None:
        """The deal with those of the facts that are newer than the ones held, field by
        field (DESIGN.md section 2), so a late or re-sent event never moves it back (a
        purged deal closed again, a closed one open); None when it takes none of them."""
        verdict = self.sequences.offer(source=source, sequence=sequence, carried=facts)
        if not verdict.fields:
            return None
        carried: Mapping[str, Any] = facts
        taken = {name: carried[name] for name in verdict.fields}
        return replace(self, **taken, sequences=verdict.applied)


def kept_because(
    deal: KnownDeal, policy: PurgePolicy, now: datetime, *, on_hold: bool
) -> Kept | None:
    """None when the deal is eligible, else the first reason it is kept."""
    if deal.stage == Stage.PURGED:
        return Kept.ALREADY_PURGED
    if deal.stage not in CLOSED or deal.closed_at is None:
        return Kept.NOT_CLOSED
    if deal.closed_at > now - policy.retention(deal.stage):
        return Kept.WITHIN_RETENTION
    if on_hold:
        return Kept.ON_HOLD
    return None


def closed_before(policy: PurgePolicy, outcome: Stage, now: datetime) -> datetime:
    """Deals of `outcome` closed before this moment are past their retention."""
    return now - policy.retention(outcome)
