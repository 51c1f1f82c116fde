"""The sequence service's projection of a deal, and the stale-deal rule.

The projection is kept from `dealflow.opportunity.events`, each field moving forward
only by the envelope sequence (`AppliedSequences`): a late `stage_changed` neither
moves the deal back nor starts a sequence. `last_activity_at` is the latest moment any
activity was seen (an opportunity event, a task completed or noted), a maximum, so any
arrival order gives the same value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, TypedDict
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.opportunity import LeadOrigin, Share, Stage
from dealflow_common.contracts.sequence import OpportunityStale, StaleReason
from dealflow_common.messaging.projection import AppliedSequences

OPEN_STAGES: Final = frozenset({Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION})


class DealFacts(TypedDict, total=False):
    """What one opportunity event says: created and updated carry every field,
    stage_changed the stage and owners, assigned the owners and team, won/lost the stage,
    shared/unshared the shares."""

    stage: Stage
    owners: list[str]
    team_id: str | None
    created_by: str
    title: str
    customer_name: str
    customer_id: str
    value_amount: str
    value_currency: str
    expected_close_date: date | None
    lead_origin: LeadOrigin | None
    contact_name: str | None
    contact_email: str | None
    shares: list[Share]


@dataclass(eq=False)
class KnownDeal:
    id: UUID
    stage: Stage
    owners: list[str]
    team_id: str | None
    created_by: str
    last_activity_at: datetime
    title: str = ""
    customer_name: str = ""
    customer_id: str = ""
    value_amount: str = ""
    value_currency: str = ""
    expected_close_date: date | None = None
    lead_origin: LeadOrigin | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    shares: list[Share] = field(default_factory=list)
    """Whom the deal is shared with: access keys for `deal_access`."""
    inactive_reported_at: datetime | None = None
    """When the deal was last reported inactive (once per quiet period)."""
    close_date_reported: date | None = None
    """The expected close date last reported as past (once per date)."""
    sequences: AppliedSequences = field(default_factory=AppliedSequences)
    events: list[EventPayload] = field(default_factory=list)

    @classmethod
    def unseen(cls, opportunity_id: UUID, now: datetime) -> KnownDeal:
        """A deal whose creation this service did not see (older than the topic's
        retention), tracked from what its later events say."""
        return cls(opportunity_id, Stage.LEAD, [], None, "", now)

    @property
    def is_open(self) -> bool:
        return self.stage in OPEN_STAGES

    @property
    def owner(self) -> str:
        """Whom a sequence's task goes to by default: the first owner, else its creator."""
        return self.owners[0] if self.owners else self.created_by

    def learn(self, facts: DealFacts, *, source: str, sequence: int) -> frozenset[str]:
        """Take the facts newer than those held, field by field; the fields taken."""
        verdict = self.sequences.offer(source=source, sequence=sequence, carried=facts)
        carried: Mapping[str, object] = facts
        for name in verdict.fields:
            setattr(self, name, carried[name])
        self.sequences = verdict.applied
        return verdict.fields

    def touch(self, at: datetime) -> None:
        self.last_activity_at = max(self.last_activity_at, at)

    def template_fields(self) -> dict[str, Any]:
        value = f"{self.value_amount} {self.value_currency}".strip()
        return {
            "title": self.title,
            "stage": self.stage.value,
            "customer_name": self.customer_name,
            "customer_id": self.customer_id,
            "owner": self.owner,
            "owners": ", ".join(self.owners),
            "team_id": self.team_id or "",
            "value": value,
            "value_amount": self.value_amount,
            "value_currency": self.value_currency,
            "expected_close_date": self.expected_close_date.isoformat()
            if self.expected_close_date
            else "",
            "contact_name": self.contact_name or "",
            "contact_email": self.contact_email or "",
        }

    @property
    def _reported_inactive_since_activity(self) -> bool:
        reported = self.inactive_reported_at
        return reported is not None and reported >= self.last_activity_at

    def stale_reasons(
        self, *, now: datetime, quiet: timedelta, has_open_future_task: bool
    ) -> list[StaleReason]:
        """Why the deal is to be reported now, if at all.

        inactive: open, no activity for `quiet`, no open task due in the future, and not
        reported since its last activity (so once per quiet period). close_date_past:
        open and its expected close date is before today (once per date)."""
        if not self.is_open:
            return []
        reasons = []
        if (
            now - self.last_activity_at >= quiet
            and not has_open_future_task
            and not self._reported_inactive_since_activity
        ):
            reasons.append(StaleReason.INACTIVE)
        if (
            self.expected_close_date is not None
            and self.expected_close_date < now.date()
            and self.close_date_reported != self.expected_close_date
        ):
            reasons.append(StaleReason.CLOSE_DATE_PAST)
        return reasons

    def report_stale(self, reason: StaleReason, now: datetime) -> None:
        if reason == StaleReason.INACTIVE:
            self.inactive_reported_at = now
        else:
            self.close_date_reported = self.expected_close_date
        self.events.append(
            OpportunityStale(
                opportunity_id=self.id,
                reason=reason,
                last_activity_at=self.last_activity_at,
                expected_close_date=self.expected_close_date,
                owners=list(self.owners),
                team_id=self.team_id,
                detected_at=now,
            )
        )

    def stale_now(self, today: date) -> list[StaleReason]:
        """Why the deal shows on the stale list: reported inactive with no activity since,
        or past its expected close date; nothing once it is closed."""
        if not self.is_open:
            return []
        reasons = []
        if self._reported_inactive_since_activity:
            reasons.append(StaleReason.INACTIVE)
        if self.expected_close_date is not None and self.expected_close_date < today:
            reasons.append(StaleReason.CLOSE_DATE_PAST)
        return reasons
