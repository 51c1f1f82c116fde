"""Events published by the quote service on `dealflow.quote.events`.

`quote.accepted` carries the quote's lines in full: the order service builds its order
from the event alone, as no service reads another's tables.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.topics import QUOTE_COMMANDS, QUOTE_EVENTS


class QuoteStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    APPROVAL_REJECTED = "approval_rejected"
    PRESENTED = "presented"
    ACCEPT_PENDING = "accept_pending"
    ACCEPTED = "accepted"
    ABANDONED = "abandoned"
    EXPIRED = "expired"


class BillingPeriod(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class QuoteLineData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    line_no: int
    product_id: UUID | None
    bundle_id: UUID | None
    sku: str | None
    description: str
    quantity: Decimal
    unit_price: Money
    discount_percent: Decimal
    total: Money
    billing: Literal["one_off", "subscription"]
    billing_period: BillingPeriod | None


class _QuoteEvent(EventPayload):
    quote_id: UUID


class QuoteCreated(_QuoteEvent):
    event_type = "quote.created"
    topic = QUOTE_EVENTS

    status: QuoteStatus
    total: Money
    valid_until: datetime
    line_count: int
    created_by: str
    created_at: datetime


class QuoteUpdated(_QuoteEvent):
    """A draft was edited (lines or validity)."""

    event_type = "quote.updated"
    topic = QUOTE_EVENTS

    total: Money
    valid_until: datetime
    line_count: int
    updated_by: str
    updated_at: datetime
    version: int


class QuoteApprovalRequested(_QuoteEvent):
    event_type = "quote.approval_requested"
    topic = QUOTE_EVENTS

    discount_percent: Decimal
    threshold_percent: Decimal
    requested_by: str
    requested_at: datetime


class QuoteApproved(_QuoteEvent):
    event_type = "quote.approved"
    topic = QUOTE_EVENTS

    approved_by: str
    approved_at: datetime


class QuoteApprovalRejected(_QuoteEvent):
    event_type = "quote.approval_rejected"
    topic = QUOTE_EVENTS

    reason: str
    rejected_by: str
    rejected_at: datetime


class QuoteReworked(_QuoteEvent):
    """Back to draft to change the offer, after a refused approval or an approval given."""

    event_type = "quote.reworked"
    topic = QUOTE_EVENTS

    previous_status: QuoteStatus
    reworked_by: str
    reworked_at: datetime


class QuotePresented(_QuoteEvent):
    event_type = "quote.presented"
    topic = QUOTE_EVENTS

    total: Money
    valid_until: datetime
    presented_by: str
    presented_at: datetime


class QuoteAcceptanceRequested(_QuoteEvent):
    """The customer accepts: the opportunity service decides whether the deal is won.

    Without an answer by `answer_by` the quote service asks again (the same request,
    a higher `attempt`), and after its last attempt stops waiting: the quote goes back
    to presented (`quote.acceptance_rejected`). A request read after its `answer_by`
    is therefore neither won nor refused; the quote that already won is answered
    `opportunity.won` again.
    """

    event_type = "quote.acceptance_requested"
    topic = QUOTE_EVENTS

    total: Money
    requested_by: str
    requested_at: datetime = Field(description="When the customer accepted (every attempt)")
    via: Literal["api", "buy_now_link"]
    attempt: int = Field(default=1, ge=1, description="1, then 2, 3, … when asked again")
    answer_by: datetime | None = Field(
        default=None, description="The quote service waits for an answer until then"
    )


class QuoteAccepted(_QuoteEvent):
    event_type = "quote.accepted"
    topic = QUOTE_EVENTS

    total: Money
    lines: list[QuoteLineData]
    accepted_at: datetime


class QuoteAcceptanceRejected(_QuoteEvent):
    event_type = "quote.acceptance_rejected"
    topic = QUOTE_EVENTS

    reason: str
    rejected_at: datetime


class QuoteAbandoned(_QuoteEvent):
    event_type = "quote.abandoned"
    topic = QUOTE_EVENTS

    reason: str
    previous_status: QuoteStatus
    abandoned_by: str
    abandoned_at: datetime


class QuoteExpired(_QuoteEvent):
    event_type = "quote.expired"
    topic = QUOTE_EVENTS

    valid_until: datetime
    expired_at: datetime


class QuotePurgeRequested(EventPayload):
    """Command from the purge agent: archive and delete every quote of the opportunity."""

    event_type = "quote.purge_requested"
    topic = QUOTE_COMMANDS

    run_id: UUID
    policy: PurgePolicySnapshot
    requested_at: datetime


class QuotePurged(_QuoteEvent):
    """The quote and its lines were archived and deleted."""

    event_type = "quote.purged"
    topic = QUOTE_EVENTS

    run_id: UUID
    previous_status: QuoteStatus
    purged_at: datetime


class QuotePurgeCompleted(EventPayload):
    """Every quote of the opportunity is purged; sent after the `quote.purged` events."""

    event_type = "quote.purge_completed"
    topic = QUOTE_EVENTS

    run_id: UUID
    count: int = Field(ge=0, description="Quotes purged by this request")
    remaining: int = Field(ge=0, description="Quotes of the opportunity left: always 0")
    completed_at: datetime
