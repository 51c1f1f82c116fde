"""The reporting service's copy of a deal, kept from `dealflow.opportunity.events`.

Each field moves forward only by the envelope sequence of the event that set it
(`AppliedSequences`), and what is derived (the furthest stage reached, the close day,
the sales cycle) is a maximum or a function of the fields, so any arrival order of the
same events leaves the same row: a rebuild from offset 0 gives the live figures again.

The purge stages are not sales stages: a purged deal keeps the stage it closed in, and
is marked purged (its figures leave the reports with its retention, see docs/reporting.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Final, TypedDict
from uuid import UUID

from dealflow_common.contracts.opportunity import (
    LeadOrigin,
    OpportunityState,
    Share,
    Stage,
)
from dealflow_common.messaging.projection import AppliedSequences
from dealflow_reporting.domain.figures import OPEN_STAGES, STAGE_RANK, from_minor, to_minor

PURGE_STAGES: Final = frozenset({Stage.PURGE_PENDING, Stage.PURGED})
WON, LOST = "won", "lost"


class DealFacts(TypedDict, total=False):
    title: str
    customer_id: str
    customer_name: str
    lead_origin: LeadOrigin | None
    currency: str
    amount_minor: int
    stage: Stage
    probability: int
    expected_close_date: date | None
    owners: list[str]
    team_id: str | None
    created_by: str
    shares: list[Share]
    created_at: datetime
    closed_at: datetime | None
    outcome: str | None
    won_currency: str | None
    won_amount_minor: int | None
    lost_reason: str | None
    purged_at: datetime


def state_facts(state: OpportunityState) -> DealFacts:
    """What `opportunity.created` and `opportunity.updated` say: the whole deal."""
    facts = DealFacts(
        title=state.title,
        customer_id=state.customer.id,
        customer_name=state.customer.name,
        lead_origin=state.lead_origin,
        currency=state.value.currency,
        amount_minor=to_minor(state.value.amount, state.value.currency),
        probability=state.probability,
        expected_close_date=state.expected_close_date,
        owners=list(state.owners),
        team_id=state.team_id,
        created_by=state.created_by,
        shares=list(state.shares),
        created_at=state.created_at,
        closed_at=state.closed_at,
        lost_reason=state.lost_reason,
    )
    if state.stage not in PURGE_STAGES:
        facts["stage"] = state.stage
        if state.stage == Stage.CLOSED_WON:
            facts["outcome"] = WON
        elif state.stage == Stage.CLOSED_LOST:
            facts["outcome"] = LOST
    return facts


@dataclass(eq=False)
class ReportedDeal:
    id: UUID
    title: str = ""
    customer_id: str = ""
    customer_name: str = ""
    lead_origin: LeadOrigin | None = None
    currency: str = ""
    amount_minor: int = 0
    stage: Stage = Stage.LEAD
    probability: int = 0
    expected_close_date: date | None = None
    owners: list[str] = field(default_factory=list)
    team_id: str | None = None
    created_by: str = ""
    shares: list[Share] = field(default_factory=list)
    """Whom the deal is shared with: they see it too (`deal_access.can_view_deal`)."""
    created_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    won_currency: str | None = None
    won_amount_minor: int | None = None
    lost_reason: str | None = None
    purged_at: datetime | None = None
    furthest_stage: int = 0
    """Rank (in `FUNNEL`) of the furthest stage the deal was ever seen in: a maximum."""
    sequences: AppliedSequences = field(default_factory=AppliedSequences)

    def learn(self, facts: DealFacts, *, source: str, sequence: int) -> frozenset[str]:
        """Take the facts newer than those held, field by field; the fields taken."""
        verdict = self.sequences.offer(source=source, sequence=sequence, carried=facts)
        carried: Mapping[str, object] = facts
        for name in verdict.fields:
            setattr(self, name, carried[name])
        self.sequences = verdict.applied
        if "stage" in facts:
            self.reached(facts["stage"])
        if facts.get("outcome") == WON:
            self.reached(Stage.CLOSED_WON)
        return verdict.fields

    def reached(self, stage: Stage) -> None:
        """The deal was in `stage` at some time (whatever the order events arrive in)."""
        rank = STAGE_RANK.get(stage)
        if rank is not None:
            self.furthest_stage = max(self.furthest_stage, rank)

    @property
    def closed_on(self) -> date | None:
        """The UTC day of the close: the period a closed deal counts in."""
        return self.closed_at.date() if self.closed_at and self.outcome else None

    @property
    def cycle_days(self) -> float | None:
        """Days from creation to close (the sales cycle), for a closed deal."""
        if self.closed_at is None or self.created_at is None or self.outcome is None:
            return None
        return round((self.closed_at - self.created_at).total_seconds() / 86400, 4)

    @property
    def value(self) -> Decimal:
        return from_minor(self.amount_minor, self.currency) if self.currency else Decimal(0)


@dataclass(frozen=True, slots=True)
class SumKey:
    """Where a deal counts in the kept sums (`deal_sums`)."""

    kind: str  # "open" or "won"
    stage: str  # the open stage; "" for won
    owner_key: str  # an owner for the sums per owner; "" otherwise (or no owner)
    team_key: str
    lead_origin_key: str
    currency: str
    year: int
    month: int


@dataclass(frozen=True, slots=True)
class Contribution:
    key: SumKey
    amount_minor: int
    weighted_centi_minor: int


def contributions(deal: ReportedDeal | None) -> list[Contribution]:
    """What a deal adds to the kept sums: as open pipeline by its expected close month,
    as won value by its close month; nothing before its creation is known, nothing once
    it is purged. The sums change by (new contributions - old ones) with each event."""
    if deal is None or deal.created_at is None or deal.purged_at is not None:
        return []
    team = deal.team_id or ""
    origin = deal.lead_origin.value if deal.lead_origin else ""
    found = []
    if deal.stage in OPEN_STAGES:
        close = deal.expected_close_date
        found.append(
            Contribution(
                SumKey(
                    "open",
                    deal.stage.value,
                    "",
                    team,
                    origin,
                    deal.currency,
                    close.year if close else 0,
                    close.month if close else 0,
                ),
                deal.amount_minor,
                deal.amount_minor * deal.probability,
            )
        )
    closed_on = deal.closed_on
    if (
        deal.outcome == WON
        and closed_on is not None
        and deal.won_currency
        and deal.won_amount_minor is not None
    ):
        found.append(
            Contribution(
                SumKey(
                    "won", "", "", team, origin, deal.won_currency, closed_on.year, closed_on.month
                ),
                deal.won_amount_minor,
                0,
            )
        )
    return found


def owner_contributions(deal: ReportedDeal | None) -> list[Contribution]:
    """`contributions` once per owner of the deal ("" for a deal with none)."""
    if deal is None:
        return []
    owners = sorted(set(deal.owners)) or [""]
    return [
        Contribution(
            replace(part.key, owner_key=owner), part.amount_minor, part.weighted_centi_minor
        )
        for part in contributions(deal)
        for owner in owners
    ]
