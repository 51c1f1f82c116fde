"""One deal's way through a purge: quotes first, then the opportunity (DESIGN.md section 6).

`TRANSITIONS` is the whole machine, one declarative table read by the agent, the event
handlers and the tests. A step that gets no answer in time fails; a failed deal is
retried with backoff from the step it failed at, and is reported until it is done.

    eligible -> quotes_requested -> quotes_purged -> opportunity_requested -> purged
    quotes_requested | opportunity_requested -> failed -> (retry) that step again
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.opportunity import OpportunityPurgeRequested
from dealflow_common.contracts.purge import PurgeOpportunityFailed, PurgePolicySnapshot
from dealflow_common.contracts.quote import QuotePurgeRequested
from dealflow_common.errors import TransitionNotAllowed


class PurgeState(StrEnum):
    ELIGIBLE = "eligible"
    QUOTES_REQUESTED = "quotes_requested"
    QUOTES_PURGED = "quotes_purged"
    OPPORTUNITY_REQUESTED = "opportunity_requested"
    PURGED = "purged"
    FAILED = "failed"


class Trigger(StrEnum):
    REQUEST_QUOTES = "request_quotes"
    """Send quote.purge_requested (first time, or a retry of that step)."""
    QUOTES_COMPLETED = "quotes_completed"
    """quote.purge_completed arrived and every quote the agent knows of is purged."""
    REQUEST_OPPORTUNITY = "request_opportunity"
    """Send opportunity.purge_requested (first time, or a retry of that step)."""
    OPPORTUNITY_PURGED = "opportunity_purged"
    """opportunity.purged arrived."""
    FAIL = "fail"
    """The step failed: no answer before the deadline, or quotes the agent knows of are left."""


TRANSITIONS: dict[tuple[PurgeState, Trigger], PurgeState] = {
    (PurgeState.ELIGIBLE, Trigger.REQUEST_QUOTES): PurgeState.QUOTES_REQUESTED,
    (PurgeState.QUOTES_REQUESTED, Trigger.QUOTES_COMPLETED): PurgeState.QUOTES_PURGED,
    (PurgeState.QUOTES_REQUESTED, Trigger.FAIL): PurgeState.FAILED,
    (PurgeState.QUOTES_PURGED, Trigger.REQUEST_OPPORTUNITY): PurgeState.OPPORTUNITY_REQUESTED,
    (PurgeState.OPPORTUNITY_REQUESTED, Trigger.OPPORTUNITY_PURGED): PurgeState.PURGED,
    (PurgeState.OPPORTUNITY_REQUESTED, Trigger.FAIL): PurgeState.FAILED,
    # A late answer still counts: the work was done, only slowly.
    (PurgeState.FAILED, Trigger.QUOTES_COMPLETED): PurgeState.QUOTES_PURGED,
    (PurgeState.FAILED, Trigger.OPPORTUNITY_PURGED): PurgeState.PURGED,
    (PurgeState.FAILED, Trigger.REQUEST_QUOTES): PurgeState.QUOTES_REQUESTED,
    (PurgeState.FAILED, Trigger.REQUEST_OPPORTUNITY): PurgeState.OPPORTUNITY_REQUESTED,
}

WAITING = frozenset({PurgeState.QUOTES_REQUESTED, PurgeState.OPPORTUNITY_REQUESTED})
"""States in which the agent waits for another service's answer."""
SETTLED = frozenset({PurgeState.PURGED, PurgeState.FAILED})
"""States in which a run stops waiting for the deal."""


def allowed_triggers(state: PurgeState) -> list[str]:
    return [t.value for (s, t) in TRANSITIONS if s == state]


@dataclass(frozen=True)
class Backoff:
    first: timedelta
    longest: timedelta

    def after(self, attempts: int) -> timedelta:
        """Wait before attempt `attempts + 1`: doubling from `first`, at most `longest`."""
        return min(self.first * (1 << max(attempts - 1, 0)), self.longest)


@dataclass(eq=False)
class DealPurge:
    """The purge of one opportunity; records the commands and failures it causes."""

    opportunity_id: UUID
    run_id: UUID
    state: PurgeState = PurgeState.ELIGIBLE
    failed_step: Literal["quotes", "opportunity"] | None = None
    attempts: int = 0
    deadline: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    quotes_purged: int = 0
    updated_at: datetime | None = None
    events: list[EventPayload] = field(default_factory=list, repr=False)

    def can(self, trigger: Trigger) -> bool:
        return (self.state, trigger) in TRANSITIONS

    def _move(self, trigger: Trigger, now: datetime) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise TransitionNotAllowed(
                "deal purge", self.state.value, trigger.value, allowed_triggers(self.state)
            )
        self.state = target
        self.updated_at = now

    def request_quotes(
        self, run_id: UUID, policy: PurgePolicySnapshot, now: datetime, answer_within: timedelta
    ) -> None:
        self._move(Trigger.REQUEST_QUOTES, now)
        self._start_attempt(run_id, now, answer_within)
        self.events.append(
            QuotePurgeRequested(
                opportunity_id=self.opportunity_id, run_id=run_id, policy=policy, requested_at=now
            )
        )

    def quotes_completed(self, count: int, now: datetime) -> None:
        self._move(Trigger.QUOTES_COMPLETED, now)
        self.quotes_purged += count
        self.deadline = None

    def request_opportunity(
        self, run_id: UUID, policy: PurgePolicySnapshot, now: datetime, answer_within: timedelta
    ) -> None:
        self._move(Trigger.REQUEST_OPPORTUNITY, now)
        self._start_attempt(run_id, now, answer_within)
        self.events.append(
            OpportunityPurgeRequested(
                opportunity_id=self.opportunity_id,
                run_id=run_id,
                policy=policy,
                quotes_purged=self.quotes_purged,
                requested_at=now,
            )
        )

    def opportunity_purged(self, now: datetime) -> None:
        self._move(Trigger.OPPORTUNITY_PURGED, now)
        self.deadline = None
        self.next_attempt_at = None
        self.last_error = None

    def fail(self, error: str, now: datetime, backoff: Backoff) -> None:
        step: Literal["quotes", "opportunity"] = (
            "quotes" if self.state == PurgeState.QUOTES_REQUESTED else "opportunity"
        )
        self._move(Trigger.FAIL, now)
        self.failed_step = step
        self.deadline = None
        self.last_error = error
        self.next_attempt_at = now + backoff.after(self.attempts)
        self.events.append(
            PurgeOpportunityFailed(
                opportunity_id=self.opportunity_id,
                run_id=self.run_id,
                step=step,
                error=error,
                attempts=self.attempts,
                next_attempt_at=self.next_attempt_at,
                failed_at=now,
            )
        )

    def is_overdue(self, now: datetime) -> bool:
        return self.state in WAITING and self.deadline is not None and self.deadline <= now

    def retry_step(self) -> Trigger:
        """What a retry of a failed deal sends again: the step it failed at."""
        return (
            Trigger.REQUEST_OPPORTUNITY
            if self.failed_step == "opportunity"
            else Trigger.REQUEST_QUOTES
        )

    def _start_attempt(self, run_id: UUID, now: datetime, answer_within: timedelta) -> None:
        self.run_id = run_id
        self.attempts += 1
        self.deadline = now + answer_within
        self.next_attempt_at = None
