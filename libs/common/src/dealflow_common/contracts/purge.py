"""The purge agent's messages: its commands to the quote and opportunity services, and
the events it publishes on `dealflow.purge.events` (DESIGN.md section 6).

The commands themselves live with the service they address (`quote.purge_requested` in
`quote`, `opportunity.purge_requested` in `opportunity`); they carry the policy they
were sent under, so that each archive can say which policy purged what.

A run concerns no single opportunity: run events are keyed by their run id (their
`subject`), and their `opportunity_id` is the nil UUID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.topics import PURGE_EVENTS

NO_OPPORTUNITY = UUID(int=0)


class PurgePolicySnapshot(BaseModel):
    """The policy a purge was decided under, as archives and journals record it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int
    retention_days_won: int
    retention_days_lost: int


class _RunEvent(EventPayload):
    opportunity_id: UUID = Field(
        default=NO_OPPORTUNITY, description="The nil UUID: a run concerns no one deal"
    )
    run_id: UUID

    @property
    def subject(self) -> str:
        return str(self.run_id)


class PurgeRunStarted(_RunEvent):
    event_type = "purge.run_started"
    topic = PURGE_EVENTS

    trigger: Literal["schedule", "operator"]
    dry_run: bool
    policy: PurgePolicySnapshot
    started_by: str
    started_at: datetime


class PurgeRunCompleted(_RunEvent):
    event_type = "purge.run_completed"
    topic = PURGE_EVENTS

    dry_run: bool
    outcome: Literal["succeeded", "failed"] = Field(
        description="failed when at least one deal could not be purged (it is retried)"
    )
    examined: int
    purged: int
    would_purge: int
    skipped: int
    failed: int
    started_at: datetime
    finished_at: datetime
    duration_seconds: float


class PurgeOpportunityFailed(EventPayload):
    """A deal could not be purged in time; the agent retries it after `next_attempt_at`."""

    event_type = "purge.opportunity_failed"
    topic = PURGE_EVENTS

    run_id: UUID
    step: Literal["quotes", "opportunity"]
    error: str
    attempts: int
    next_attempt_at: datetime
    failed_at: datetime
