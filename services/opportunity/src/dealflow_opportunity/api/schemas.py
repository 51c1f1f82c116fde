"""Request and response bodies. Requests refuse unknown fields; money is exact."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Address,
    Contact,
    Customer,
    LeadOrigin,
    NextAction,
    NoteReason,
    OpportunityState,
    ShareGrant,
    Stage,
)
from dealflow_common.http.fields import ISO_DATE, WHOLE_NUMBER, Text

# WHOLE_NUMBER after the Field: before it, pydantic writes `ge`/`le` into the JSON
# Schema instead of `minimum`/`maximum`.
Probability = Annotated[
    int, Field(ge=0, le=100, strict=True, description="Percent, 0-100"), WHOLE_NUMBER
]
Day = Annotated[date, ISO_DATE]
Title = Annotated[str, Text(200)]
UserId = Annotated[str, Text(200)]
TeamId = Annotated[str, Text(100)]
Reason = Annotated[str, Text(500)]
LongText = Annotated[str, Text(5000)]
Reference = Annotated[str, Text(200)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenOpportunityRequest(_Request):
    title: Title
    customer: Customer
    value: Money
    description: LongText | None = None
    contact: Contact | None = Field(default=None, description="A person at an organization")
    contact_address: Address | None = Field(
        default=None, description="Where to reach the customer when there is no contact"
    )
    probability: Probability | None = Field(default=None, description="Default: 10 (lead)")
    expected_close_date: Day | None = None
    next_action: NextAction | None = None
    lead_origin: LeadOrigin | None = None
    external_reference: Reference | None = None
    owners: list[UserId] | None = Field(
        default=None,
        max_length=20,
        description="Default: the caller. An empty list with a team_id puts the deal in "
        "that team's queue until a rep claims it.",
    )
    team_id: TeamId | None = None
    custom_fields: dict[str, Any] | None = Field(
        default=None,
        max_length=200,
        description="Values of the custom fields by key (`GET /custom-fields`); every "
        "required field needs one. Numbers as JSON numbers or decimal strings, dates as "
        "YYYY-MM-DD, money as {amount, currency}, a choice as one of its choices.",
    )


class UpdateOpportunityRequest(_Request):
    """Only the fields sent change; `null` clears an optional field."""

    # Required fields take `None` only as "not sent": an explicit null fails validation.
    title: Title = None  # type: ignore[assignment]
    customer: Customer = None  # type: ignore[assignment]
    value: Money = None  # type: ignore[assignment]
    probability: Probability = None  # type: ignore[assignment]
    description: LongText | None = None
    contact: Contact | None = None
    contact_address: Address | None = None
    expected_close_date: Day | None = None
    next_action: NextAction | None = None
    lead_origin: LeadOrigin | None = None
    external_reference: Reference | None = None
    custom_fields: dict[str, Any] = Field(
        default=None,  # type: ignore[arg-type]
        max_length=200,
        description="Sets the keys given and keeps the others; `null` for a key clears it "
        "(not a required one)",
    )

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


class StageMoveRequest(_Request):
    stage: Stage
    probability: Probability | None = Field(
        default=None, description="Default: the new stage's default probability"
    )
    lost_reason: Reason | None = Field(default=None, description="Required for closed_lost")
    note: LongText | None = None


class LoseRequest(_Request):
    reason: Reason
    note: LongText | None = None


class OwnerRequest(_Request):
    user_id: UserId


class TeamRequest(_Request):
    team_id: TeamId


class ShareRequest(_Request):
    """Share the deal with a user or a team; sharing again changes the grant."""

    kind: Literal["user", "team"]
    id: UserId = Field(description="The user's `sub`, or the team id")
    grant: ShareGrant = Field(description="`read` sees the deal; `edit` works on it too")


# stage_change, lost and won are recorded by the system with the move they explain.
PersonNoteReason = Literal["general", "call", "meeting", "email", "follow_up"]


class NoteRequest(_Request):
    reason: PersonNoteReason = "general"
    text: LongText


class OpportunityResponse(OpportunityState):
    allowed_moves: list[Stage] = Field(description="Stages the stage endpoint accepts now")
    next_action_source: Literal["hand", "sequence", "task"] | None = Field(
        default=None,
        description="Where next_action came from: set by hand (kept while its date is "
        "today or later), by a sequence's next_action step (kept likewise unless a person "
        "set one), or the earliest due date of the deal's open tasks (the note is the "
        "task's title)",
    )


class OpportunityPage(BaseModel):
    items: list[OpportunityResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class SalesHistoryResponse(BaseModel):
    from_stage: Stage | None = Field(description="None for the opening entry")
    to_stage: Stage
    at: datetime
    by: str
    days_in_previous_stage: float | None
    owners: list[str] = Field(description="The owners at the time of the move")
    probability: int


class NoteResponse(BaseModel):
    id: UUID
    reason: NoteReason
    text: str
    added_by: str
    added_at: datetime


class AssignmentResponse(BaseModel):
    action: str
    user_id: str | None
    team_id: str | None
    owners: list[str]
    by: str
    at: datetime


class StageMachineResponse(BaseModel):
    stages: list[Stage]
    open_stages: list[Stage]
    default_probability: dict[Stage, int]
    transitions: list[dict[str, str]]
    mermaid: str


CustomFieldKey = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9_]{0,49}$")
]
Label = Annotated[str, Text(200)]
TabLabel = Annotated[str, Text(100)]
Choice = Annotated[str, Text(200)]


class CustomFieldRequest(_Request):
    key: CustomFieldKey = Field(description="Lower-case letters, digits and _; never changes")
    label: Label
    type: Literal["text", "number", "money", "date", "choice"] = Field(
        description="Never changes once defined"
    )
    required: bool = False
    choices: list[Choice] = Field(
        default_factory=list, max_length=100, description="The choices of a choice field"
    )
    tab: TabLabel | None = Field(default=None, description="The tab that groups it on the deal")


class CustomFieldChangeRequest(_Request):
    """Only the fields sent change; `retired: true` retires the field (deals keep values)."""

    label: Label = None  # type: ignore[assignment]
    required: bool = None  # type: ignore[assignment]
    choices: list[Choice] = Field(default=None, max_length=100)  # type: ignore[arg-type]
    tab: TabLabel | None = None
    retired: bool = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


class CustomFieldResponse(BaseModel):
    key: str
    label: str
    type: Literal["text", "number", "money", "date", "choice"]
    required: bool
    choices: list[str]
    tab: str | None
    position: int
    retired: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class BulkFilter(_Request):
    """The filters of `GET /opportunities`, matched among the deals the caller may see."""

    stage: list[Stage] = Field(default_factory=list, max_length=10)
    owner: UserId | None = None
    team: TeamId | None = None
    customer: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    q: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    expected_close_from: Day | None = None
    expected_close_to: Day | None = None
    custom_fields: dict[str, Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=dict, max_length=50, description="As `cf.<key>=<value>` in the list"
    )


class BulkSelection(_Request):
    ids: list[UUID] | None = Field(
        default=None, min_length=1, description="The deals to change; or give a `filter`"
    )
    filter: BulkFilter | None = Field(default=None, description="Or the deals it matches")

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or a filter")
        return self


class BulkStageRequest(BulkSelection):
    stage: Stage
    probability: Probability | None = None
    lost_reason: Reason | None = Field(default=None, description="Required for closed_lost")
    note: LongText | None = None


class BulkAssignRequest(BulkSelection):
    """Add `user_id` as an owner of each deal, or hand each deal to `team_id`'s queue."""

    user_id: UserId | None = None
    team_id: TeamId | None = None

    @model_validator(mode="after")
    def _one_assignee(self) -> Self:
        if (self.user_id is None) == (self.team_id is None):
            raise ValueError("give either user_id or team_id")
        return self


class BulkResult(BaseModel):
    id: UUID
    outcome: Literal["changed", "unchanged", "refused", "not_found"] = Field(
        description="`unchanged`: allowed, but the deal already was so (no new version)"
    )
    version: int | None = Field(default=None, description="The deal's version after the change")
    problem: dict[str, Any] | None = Field(
        default=None, description="Why it was refused: the problem document a single request gets"
    )


class BulkResponse(BaseModel):
    results: list[BulkResult] = Field(description="One per deal, in the order they were changed")
    changed: int
    unchanged: int
    refused: int
    not_found: int


RecordName = Annotated[str, Text(200)]
RecordText = Annotated[str, Text(2000)]
CompetitorStatus = Literal["active", "lost_to", "won_against"]
IssueStatus = Literal["open", "resolved"]
ContactRole = Literal["decision_maker", "influencer", "champion", "user", "other"]
Email = Annotated[str, Text(320)]
Phone = Annotated[str, Text(50)]


class _RecordChange(_Request):
    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


class CompetitorRequest(_Request):
    name: RecordName
    strengths: RecordText | None = None
    weaknesses: RecordText | None = None
    status: CompetitorStatus = "active"


class CompetitorChange(_RecordChange):
    """Only the fields sent change; `null` clears strengths or weaknesses."""

    name: RecordName = None  # type: ignore[assignment]
    strengths: RecordText | None = None
    weaknesses: RecordText | None = None
    status: CompetitorStatus = None  # type: ignore[assignment]


class DecisionIssueRequest(_Request):
    description: RecordText
    owner: UserId | None = Field(default=None, description="Who follows it up")
    status: IssueStatus = "open"
    resolution: RecordText | None = Field(default=None, description="Required when resolved")


class DecisionIssueChange(_RecordChange):
    description: RecordText = None  # type: ignore[assignment]
    owner: UserId | None = None
    status: IssueStatus = None  # type: ignore[assignment]
    resolution: RecordText | None = None


class DealContactRequest(_Request):
    name: RecordName
    role: ContactRole
    email: Email | None = None
    phone: Phone | None = None


class DealContactChange(_RecordChange):
    name: RecordName = None  # type: ignore[assignment]
    role: ContactRole = None  # type: ignore[assignment]
    email: Email | None = None
    phone: Phone | None = None
