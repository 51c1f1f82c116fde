"""Events published by the sequence service on `dealflow.sequence.events`.

Every event concerns one opportunity (the subject and the key): the enrollment of a
deal in a follow-up sequence and its course, the follow-up tasks of a deal, the emails
a step asks a mail gateway to send (nothing is mailed by Dealflow itself), and the
alert that an open deal has gone quiet or is past its expected close date.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.topics import SEQUENCE_EVENTS

SEQUENCE_ACTOR: Final = "system:sequence"
"""Who did what the sequence service does on its own (`enrolled_by`, `cancelled_by`,
`created_by` of a step's task), and the `updated_by` of an `opportunity.updated` that
its events caused (the deal's next action following its tasks)."""


class StepAction(StrEnum):
    TASK = "task"
    """Create a follow-up task."""
    EMAIL = "email"
    """Ask the mail gateway to send an email rendered from a template."""
    NEXT_ACTION = "next_action"
    """Set the deal's next action date and note."""


class TaskKind(StrEnum):
    TASK = "task"
    APPOINTMENT = "appointment"


class StaleReason(StrEnum):
    INACTIVE = "inactive"
    """No activity and no open future task for the configured quiet period."""
    CLOSE_DATE_PAST = "close_date_past"
    """The expected close date has passed and the deal is still open."""


class NextActionData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    date: date
    note: str | None = None


class SequenceEnrolled(EventPayload):
    """A deal entered a follow-up sequence, by its trigger or by hand."""

    event_type = "sequence.enrolled"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    sequence_version: int
    sequence_name: str
    enrolled_by: str = Field(description="The user, or `system:sequence` for a trigger")
    trigger_event_id: UUID | None = Field(
        default=None, description="The opportunity event that enrolled the deal, if any"
    )
    enrolled_at: datetime
    first_step_due_at: datetime | None


class SequenceStepExecuted(EventPayload):
    """One step of an enrollment ran (once: its record and its effects share a commit)."""

    event_type = "sequence.step_executed"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    step_no: int = Field(ge=1)
    action: StepAction
    due_at: datetime
    executed_at: datetime
    result: Literal["done", "failed"]
    detail: str | None = None
    task_id: UUID | None = None
    email_id: UUID | None = None
    next_action: NextActionData | None = Field(
        default=None, description="For a next_action step: the deal's new next action"
    )


class SequencePaused(EventPayload):
    event_type = "sequence.paused"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    paused_by: str
    paused_at: datetime


class SequenceResumed(EventPayload):
    event_type = "sequence.resumed"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    resumed_by: str
    resumed_at: datetime
    next_step_due_at: datetime | None


class SequenceCompleted(EventPayload):
    """Every step of the enrollment ran."""

    event_type = "sequence.completed"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    completed_at: datetime


class SequenceCancelled(EventPayload):
    """By hand, or by an exit condition (deal closed, trigger stage left, deal purged)."""

    event_type = "sequence.cancelled"
    topic = SEQUENCE_EVENTS

    enrollment_id: UUID
    sequence_id: UUID
    reason: str
    cancelled_by: str
    cancelled_at: datetime


class TaskCreated(EventPayload):
    event_type = "task.created"
    topic = SEQUENCE_EVENTS

    task_id: UUID
    kind: TaskKind
    title: str
    assignee: str
    due_at: datetime
    enrollment_id: UUID | None = Field(
        default=None, description="The enrollment whose step created it; None for a manual task"
    )
    created_by: str
    created_at: datetime


class TaskCompleted(EventPayload):
    event_type = "task.completed"
    topic = SEQUENCE_EVENTS

    task_id: UUID
    completed_by: str
    completed_at: datetime


class EmailRequested(EventPayload):
    """An email for a mail gateway to send; rendered here in a sandbox, mailed elsewhere."""

    event_type = "email.requested"
    topic = SEQUENCE_EVENTS

    email_id: UUID
    enrollment_id: UUID
    step_no: int
    sender: str = Field(description="The deal owner the email is sent on behalf of")
    to: str | None = Field(description="The deal contact's address, when the deal has one")
    subject_line: str
    body: str
    requested_at: datetime


class OpportunityStale(EventPayload):
    """An open deal needs attention: quiet too long, or past its expected close date.

    Reported once per quiet period (again only after new activity and another quiet
    period), and once per expected close date that passes.
    """

    event_type = "opportunity.stale"
    topic = SEQUENCE_EVENTS

    reason: StaleReason
    last_activity_at: datetime
    expected_close_date: date | None
    owners: list[str]
    team_id: str | None
    detected_at: datetime
