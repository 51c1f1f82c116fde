"""Request and response bodies of the sequence service's API.

Step and trigger bodies take their values as plain strings: the domain reads them
(`SequenceDefinition.define`) and refuses a bad one naming its field, the same way
whether it comes from a request or from a stored version.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dealflow_common.contracts.sequence import StaleReason, TaskKind


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerBody(_Body):
    event: str = Field(
        max_length=100,
        description="opportunity.stage_changed (with `stage`) or opportunity.created",
        examples=["opportunity.stage_changed"],
    )
    stage: str | None = Field(
        default=None, max_length=50, description="The stage entered (an open stage)"
    )
    lead_origin: str | None = Field(
        default=None, max_length=50, description="opportunity.created only: the deal's lead origin"
    )


class StepBody(_Body):
    after: str = Field(
        max_length=50,
        description="ISO 8601 duration after the previous step (the first: after "
        "enrollment): P2D, PT4H, P1W; no years or months",
        examples=["P2D"],
    )
    action: str = Field(max_length=50, description="task, email or next_action", examples=["task"])
    title: str | None = Field(default=None, max_length=500, description="task: its title")
    assignee: str | None = Field(
        default=None, max_length=200, description="task: default the deal's owner"
    )
    due: str | None = Field(
        default=None,
        max_length=50,
        description="task: due this long after the step runs (default P1D); next_action: "
        "the next action date this long after the step runs (default P0D)",
    )
    kind: str | None = Field(
        default=None, max_length=50, description="task: task (default) or appointment"
    )
    subject: str | None = Field(default=None, max_length=1000, description="email: Jinja2 template")
    body: str | None = Field(default=None, max_length=20_000, description="email: Jinja2 template")
    note: str | None = Field(default=None, max_length=1000, description="next_action: the note")


class SequenceRequest(_Body):
    name: str = Field(min_length=1, max_length=200)
    trigger: TriggerBody
    steps: list[StepBody] = Field(min_length=1, max_length=50)
    exit_conditions: list[Annotated[str, Field(max_length=50)]] | None = Field(
        default=None,
        max_length=10,
        description="deal_closed, trigger_stage_left (default: both)",
    )


class SequenceResponse(BaseModel):
    id: UUID
    version: int
    name: str
    trigger: dict[str, Any]
    steps: list[dict[str, Any]]
    exit_conditions: list[str]
    retired: bool
    retired_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class EnrollRequest(_Body):
    sequence_id: UUID


StepState = Literal["done", "failed", "scheduled", "waiting", "planned", "skipped"]


class StepHistory(BaseModel):
    step_no: int
    action: str
    after: str
    state: StepState = Field(
        description="done/failed: it ran; scheduled: next, due at due_at; waiting: next, "
        "the enrollment is paused; planned: later (due_at estimated); skipped: the "
        "enrollment ended before it"
    )
    due_at: datetime | None
    executed_at: datetime | None = None
    result: str | None = None
    detail: str | None = None
    task_id: UUID | None = None


class EnrollmentResponse(BaseModel):
    id: UUID
    opportunity_id: UUID
    sequence_id: UUID
    sequence_version: int
    sequence_name: str
    state: str
    allowed_actions: list[str]
    enrolled_by: str
    enrolled_at: datetime
    next_step: int | None
    next_due_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    steps: list[StepHistory]
    version: int


class TaskRequest(_Body):
    opportunity_id: UUID
    title: str = Field(min_length=1, max_length=500)
    due_at: AwareDatetime
    assignee: str | None = Field(default=None, max_length=200, description="Default: the caller")
    kind: TaskKind = TaskKind.TASK


class NoteRequest(_Body):
    text: str = Field(min_length=1, max_length=5000)


class NoteResponse(BaseModel):
    id: UUID
    text: str
    author: str
    added_at: datetime


class TaskResponse(BaseModel):
    id: UUID
    opportunity_id: UUID
    enrollment_id: UUID | None
    kind: TaskKind
    title: str
    assignee: str
    due_at: datetime
    state: str
    overdue: bool
    allowed_actions: list[str]
    created_by: str
    created_at: datetime
    completed_by: str | None
    completed_at: datetime | None
    notes: list[NoteResponse]
    version: int


class StaleDealResponse(BaseModel):
    opportunity_id: UUID
    reasons: list[StaleReason]
    title: str
    stage: str
    owners: list[str]
    team_id: str | None
    last_activity_at: datetime
    expected_close_date: date | None
