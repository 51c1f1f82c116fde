"""Events published by the opportunity service on `dealflow.opportunity.events`.

`opportunity.created` and `opportunity.updated` carry the whole state of the deal, so a
subscriber can keep a projection without asking; the others carry what the move was.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.topics import OPPORTUNITY_COMMANDS, OPPORTUNITY_EVENTS


class Stage(StrEnum):
    LEAD = "lead"
    QUALIFICATION = "qualification"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"
    PURGE_PENDING = "purge_pending"
    PURGED = "purged"


class LeadOrigin(StrEnum):
    TRADE_SHOW = "trade_show"
    CALL_CENTER = "call_center"
    CUSTOMER_CALL = "customer_call"
    WEB = "web"
    REFERRAL = "referral"
    OTHER = "other"


class NoteReason(StrEnum):
    GENERAL = "general"
    CALL = "call"
    MEETING = "meeting"
    EMAIL = "email"
    FOLLOW_UP = "follow_up"
    STAGE_CHANGE = "stage_change"
    LOST = "lost"
    WON = "won"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Part):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)


class Address(_Part):
    lines: list[str] = Field(min_length=1, max_length=4)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    region: str | None = Field(default=None, max_length=100)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class Customer(_Part):
    """An organization or an individual, never both; `kind` says which."""

    kind: Literal["organization", "individual"]
    id: str = Field(min_length=1, max_length=100, description="The customer's id in the CRM")
    name: str = Field(min_length=1, max_length=200)


class ShareGrant(StrEnum):
    """What a share lets its holder do: `read` sees the deal and its quotes, tasks and
    orders; `edit` works on it as an owner does."""

    READ = "read"
    EDIT = "edit"


class Share(_Part):
    """One user or one team the deal is shared with, and what they may do with it."""

    kind: Literal["user", "team"]
    id: str = Field(min_length=1, max_length=200, description="The user's `sub` or the team id")
    grant: ShareGrant


class NextAction(_Part):
    date: date
    note: str | None = Field(default=None, max_length=1000)


class Competitor(_Part):
    """Another vendor the customer weighs against us on this deal."""

    id: UUID
    name: str = Field(min_length=1, max_length=200)
    strengths: str | None = Field(default=None, max_length=2000)
    weaknesses: str | None = Field(default=None, max_length=2000)
    status: Literal["active", "lost_to", "won_against"] = "active"


class DecisionIssue(_Part):
    """Something the customer must settle before deciding, who follows it, and how it
    was resolved."""

    id: UUID
    description: str = Field(min_length=1, max_length=2000)
    owner: str | None = Field(default=None, max_length=200)
    status: Literal["open", "resolved"] = "open"
    resolution: str | None = Field(default=None, max_length=2000)


class DealContact(_Part):
    """A person at the customer with a part in the decision."""

    id: UUID
    name: str = Field(min_length=1, max_length=200)
    role: Literal["decision_maker", "influencer", "champion", "user", "other"]
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)


CustomFieldValue = str | Money
"""A custom field's value: text, a decimal string (number), an ISO date, a choice, or
money; numbers are exact decimal strings like money amounts, never floats."""


class OpportunityState(_Part):
    id: UUID
    title: str
    description: str | None
    customer: Customer
    contact: Contact | None
    contact_address: Address | None
    value: Money
    stage: Stage
    probability: int
    expected_close_date: date | None
    next_action: NextAction | None
    lead_origin: LeadOrigin | None
    external_reference: str | None
    owners: list[str]
    team_id: str | None
    won_quote_id: UUID | None
    order_id: UUID | None
    lost_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    version: int
    shares: list[Share] = Field(
        default_factory=list, description="Who else may read or edit the deal (the Sharing tab)"
    )
    custom_fields: dict[str, CustomFieldValue] = Field(
        default_factory=dict,
        description="Values of the fields an admin defined for deals (`GET /custom-fields`), "
        "by key; a field without a value is absent",
    )
    competitors: list[Competitor] = Field(default_factory=list)
    decision_issues: list[DecisionIssue] = Field(default_factory=list)
    contacts: list[DealContact] = Field(
        default_factory=list, description="People at the customer, with their roles"
    )


class OpportunityCreated(EventPayload):
    event_type = "opportunity.created"
    topic = OPPORTUNITY_EVENTS

    opportunity: OpportunityState


class OpportunityUpdated(EventPayload):
    event_type = "opportunity.updated"
    topic = OPPORTUNITY_EVENTS

    opportunity: OpportunityState
    changed_fields: list[str]
    updated_by: str


class OpportunityStageChanged(EventPayload):
    event_type = "opportunity.stage_changed"
    topic = OPPORTUNITY_EVENTS

    from_stage: Stage
    to_stage: Stage
    probability: int
    changed_by: str
    changed_at: datetime
    days_in_previous_stage: float
    owners: list[str]
    version: int


class OpportunityAssigned(EventPayload):
    event_type = "opportunity.assigned"
    topic = OPPORTUNITY_EVENTS

    action: Literal["assigned", "unassigned", "claimed", "team_assigned"]
    user_id: str | None = Field(description="The rep added or removed; None for a team move")
    owners: list[str] = Field(description="Owners after the change")
    team_id: str | None
    assigned_by: str
    assigned_at: datetime
    version: int


class OpportunityShared(EventPayload):
    """The deal was shared with a user or a team, or a share's grant changed."""

    event_type = "opportunity.shared"
    topic = OPPORTUNITY_EVENTS

    share: Share
    shares: list[Share] = Field(description="Every share of the deal after the change")
    shared_by: str
    shared_at: datetime
    version: int


class OpportunityUnshared(EventPayload):
    """A share of the deal was revoked."""

    event_type = "opportunity.unshared"
    topic = OPPORTUNITY_EVENTS

    share: Share = Field(description="The share revoked, as it was")
    shares: list[Share] = Field(description="Every share of the deal after the change")
    unshared_by: str
    unshared_at: datetime
    version: int


class OpportunityNoteAdded(EventPayload):
    event_type = "opportunity.note_added"
    topic = OPPORTUNITY_EVENTS

    note_id: UUID
    reason: NoteReason
    text: str
    added_by: str
    added_at: datetime


class OpportunityWon(EventPayload):
    event_type = "opportunity.won"
    topic = OPPORTUNITY_EVENTS

    won_quote_id: UUID | None = Field(description="The accepted quote, when won through one")
    value: Money = Field(description="The opportunity's value")
    quote_total: Money | None = Field(
        default=None, description="The accepted quote's total, when won through one"
    )
    won_by: str
    won_at: datetime
    version: int
    repeated: bool = Field(
        default=False,
        description="An answer to an acceptance request asked again by the quote that had "
        "already won: the deal was won once, at `won_at`; count it once",
    )


class OpportunityLost(EventPayload):
    event_type = "opportunity.lost"
    topic = OPPORTUNITY_EVENTS

    reason: str
    lost_by: str
    lost_at: datetime
    version: int


class OpportunityAcceptanceRefused(EventPayload):
    """The opportunity could not be won by this quote (closed, or another quote won)."""

    event_type = "opportunity.acceptance_refused"
    topic = OPPORTUNITY_EVENTS

    quote_id: UUID
    reason: str
    stage: Stage


class OpportunityPurgeRequested(EventPayload):
    """Command from the purge agent, sent once every quote of the deal is purged."""

    event_type = "opportunity.purge_requested"
    topic = OPPORTUNITY_COMMANDS

    run_id: UUID
    policy: PurgePolicySnapshot
    quotes_purged: int = Field(ge=0, description="Quotes the agent saw purged")
    requested_at: datetime


class OpportunityPurged(EventPayload):
    """The closed deal, with its notes, history and assignments, was archived and deleted."""

    event_type = "opportunity.purged"
    topic = OPPORTUNITY_EVENTS

    run_id: UUID
    stage: Stage = Field(description="The closed stage the deal was in")
    closed_at: datetime | None
    purged_at: datetime
