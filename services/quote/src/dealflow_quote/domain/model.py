"""The Quote aggregate: an offer to the customer of one opportunity, with its lines.

Each command checks the lifecycle table, moves the status, bumps `version` once and
records the events it caused (the contracts of `dealflow.quote.events`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import (
    QuoteAbandoned,
    QuoteAcceptanceRejected,
    QuoteAcceptanceRequested,
    QuoteAccepted,
    QuoteApprovalRejected,
    QuoteApprovalRequested,
    QuoteApproved,
    QuoteCreated,
    QuoteExpired,
    QuotePresented,
    QuoteReworked,
    QuoteStatus,
    QuoteUpdated,
)
from dealflow_common.copying import shallow_copy
from dealflow_common.errors import StaleVersion
from dealflow_quote.domain import lifecycle
from dealflow_quote.domain.errors import (
    ApprovalNotNeeded,
    ApprovalRequired,
    CurrencyMismatch,
    QuoteActionNotAllowed,
    SelfApproval,
    ValidUntilInPast,
)
from dealflow_quote.domain.lifecycle import QuoteAction
from dealflow_quote.domain.pricing import QuoteLine, discount_percent_of, total_of

AcceptedVia = Literal["api", "buy_now_link"]


@dataclass(frozen=True, slots=True)
class AcceptanceDeadline:
    """How long a quote waits for the opportunity's answer to an acceptance, and how
    many times it asks again before it stops waiting."""

    answer_within: timedelta
    asks_again: int


@dataclass(frozen=True, slots=True)
class AcceptanceRequest:
    """The customer's latest acceptance of a quote, as put to the opportunity."""

    requested_by: str
    requested_at: datetime
    via: AcceptedVia
    answer_due_at: datetime
    """Until then the opportunity's answer is awaited (the request's `answer_by`)."""
    asked_again: int = 0


@dataclass(eq=False)
class Quote:
    id: UUID
    opportunity_id: UUID
    status: QuoteStatus
    currency: str
    lines: list[QuoteLine]
    valid_until: datetime
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    status_reason: str | None = None
    """Why it was abandoned, why approval or acceptance was refused."""
    approved_by: str | None = None
    accepted_at: datetime | None = None
    acceptance: AcceptanceRequest | None = None

    events: list[EventPayload] = field(default_factory=list, repr=False)
    lines_changed: bool = field(default=False, repr=False)
    version_bumped: bool = field(default=False, repr=False)
    _priced: tuple[list[QuoteLine], Money, Decimal] | None = field(
        default=None, init=False, repr=False
    )
    """The total and discount of the list of lines they were summed from: a change and its
    answer ask for them six to ten times. A list of lines is never changed in place (a
    revision puts a new one), so the list itself tells whether the sums still hold."""

    @classmethod
    def draft(
        cls,
        *,
        opportunity_id: UUID,
        currency: str,
        lines: list[QuoteLine],
        valid_until: datetime,
        by: str,
        now: datetime,
        quote_id: UUID | None = None,
    ) -> Quote:
        _check_lines(lines, currency)
        _check_valid_until(valid_until, now)
        quote = cls(
            id=quote_id or uuid.uuid4(),
            opportunity_id=opportunity_id,
            status=QuoteStatus.DRAFT,
            currency=currency,
            lines=lines,
            valid_until=valid_until,
            created_by=by,
            created_at=now,
            updated_at=now,
            version=1,
            lines_changed=True,
            version_bumped=True,
        )
        quote.events.append(
            QuoteCreated(
                opportunity_id=opportunity_id,
                quote_id=quote.id,
                status=quote.status,
                total=quote.total,
                valid_until=valid_until,
                line_count=len(lines),
                created_by=by,
                created_at=now,
            )
        )
        return quote

    # --- queries --------------------------------------------------------------------

    @property
    def total(self) -> Money:
        return self._pricing()[1]

    @property
    def discount_percent(self) -> Decimal:
        return self._pricing()[2]

    def _pricing(self) -> tuple[list[QuoteLine], Money, Decimal]:
        priced = self._priced
        if priced is None or priced[0] is not self.lines:
            lines = self.lines
            priced = (lines, total_of(lines, self.currency), discount_percent_of(lines))
            self._priced = priced
        return priced

    @property
    def is_open(self) -> bool:
        return self.status in lifecycle.OPEN

    def needs_approval(self, threshold_percent: Decimal) -> bool:
        return self.discount_percent > threshold_percent

    def allowed_actions(self, threshold_percent: Decimal) -> list[QuoteAction]:
        """What a person may do now: a draft is presented, or submitted for approval when
        its discount is above the threshold, never both."""
        actions = lifecycle.allowed_actions(self.status)
        if self.status == QuoteStatus.DRAFT:
            needless = (
                QuoteAction.PRESENT
                if self.needs_approval(threshold_percent)
                else QuoteAction.SUBMIT_FOR_APPROVAL
            )
            actions = [a for a in actions if a != needless]
        return actions

    def snapshot(self) -> Quote:
        """A copy to change apart from this one, with nothing pending: its list of lines
        is its own (the lines are immutable), its version not yet moved."""
        twin = shallow_copy(self)
        twin.lines = list(self.lines)
        if self._priced is not None and self._priced[0] is self.lines:
            twin._priced = (twin.lines, *self._priced[1:])  # the same lines, the same sums
        twin.events = []
        twin.lines_changed = False
        twin.version_bumped = False
        return twin

    def check_version(self, expected: int | None) -> None:
        if expected is not None and expected != self.version:
            raise StaleVersion("quote", expected, self.version)

    # --- commands by people ---------------------------------------------------------

    def revise(
        self,
        by: str,
        now: datetime,
        *,
        lines: list[QuoteLine] | None = None,
        valid_until: datetime | None = None,
    ) -> None:
        """Edit a draft: its lines, its validity, or both."""
        self._require(QuoteAction.EDIT)
        # Check everything before changing anything: a refused edit leaves the quote as it was.
        if lines is not None:
            _check_lines(lines, self.currency)
        if valid_until is not None:
            _check_valid_until(valid_until, now)
        if lines is not None:
            self.lines = lines
            self.lines_changed = True
        if valid_until is not None:
            self.valid_until = valid_until
        self._move(QuoteStatus.DRAFT, now)
        self.events.append(
            QuoteUpdated(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                total=self.total,
                valid_until=self.valid_until,
                line_count=len(self.lines),
                updated_by=by,
                updated_at=now,
                version=self.version,
            )
        )

    def submit_for_approval(self, threshold_percent: Decimal, by: str, now: datetime) -> None:
        self._require(QuoteAction.SUBMIT_FOR_APPROVAL)
        if not self.needs_approval(threshold_percent):
            raise ApprovalNotNeeded(
                self.discount_percent, threshold_percent, self.allowed_actions(threshold_percent)
            )
        self._move(QuoteStatus.PENDING_APPROVAL, now)
        self.events.append(
            QuoteApprovalRequested(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                discount_percent=self.discount_percent,
                threshold_percent=threshold_percent,
                requested_by=by,
                requested_at=now,
            )
        )

    def approve(self, by: str, now: datetime) -> None:
        """A manager's approval of the discount; never the quote's own author's (the
        four-eyes rule a discount approval exists for)."""
        self._require(QuoteAction.APPROVE)
        if by == self.created_by:
            raise SelfApproval(self.id)
        self.approved_by = by
        self._move(QuoteStatus.APPROVED, now)
        self.events.append(
            QuoteApproved(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                approved_by=by,
                approved_at=now,
            )
        )

    def reject_approval(self, reason: str, by: str, now: datetime) -> None:
        self._require(QuoteAction.REJECT_APPROVAL)
        self.status_reason = reason
        self._move(QuoteStatus.APPROVAL_REJECTED, now)
        self.events.append(
            QuoteApprovalRejected(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                reason=reason,
                rejected_by=by,
                rejected_at=now,
            )
        )

    def rework(self, by: str, now: datetime) -> None:
        """Back to draft to change the offer; an approval given before no longer holds."""
        self._require(QuoteAction.REWORK)
        previous = self.status
        self.status_reason = None
        self.approved_by = None
        self._move(QuoteStatus.DRAFT, now)
        self.events.append(
            QuoteReworked(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                previous_status=previous,
                reworked_by=by,
                reworked_at=now,
            )
        )

    def present(self, threshold_percent: Decimal, by: str, now: datetime) -> None:
        self._require(QuoteAction.PRESENT)
        if self.status == QuoteStatus.DRAFT and self.needs_approval(threshold_percent):
            raise ApprovalRequired(
                self.discount_percent, threshold_percent, self.allowed_actions(threshold_percent)
            )
        _check_valid_until(self.valid_until, now)
        self._move(QuoteStatus.PRESENTED, now)
        self.events.append(
            QuotePresented(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                total=self.total,
                valid_until=self.valid_until,
                presented_by=by,
                presented_at=now,
            )
        )

    def request_acceptance(
        self, by: str, now: datetime, via: AcceptedVia, deadline: AcceptanceDeadline
    ) -> bool:
        """The customer accepts; the deal's fate is the opportunity service's to decide,
        and its answer is awaited until `deadline.answer_within` from now.

        A presented quote past its validity is expired on the spot instead, even when
        the expiry job has not reached it yet: returns False, and the caller keeps
        that change and refuses the acceptance.
        """
        self._require(QuoteAction.ACCEPT)
        if self.expire(now):
            return False
        self.acceptance = AcceptanceRequest(by, now, via, now + deadline.answer_within)
        self._move(QuoteStatus.ACCEPT_PENDING, now)
        self._ask_opportunity()
        return True

    def abandon(self, reason: str, by: str, now: datetime) -> None:
        self._require(QuoteAction.ABANDON)
        previous = self.status
        self.status_reason = reason
        self._move(QuoteStatus.ABANDONED, now)
        self.events.append(
            QuoteAbandoned(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                reason=reason,
                previous_status=previous,
                abandoned_by=by,
                abandoned_at=now,
            )
        )

    # --- commands of the saga and the scheduler -------------------------------------

    def confirm_acceptance(self, now: datetime) -> None:
        """The opportunity was won by this quote. A repeated confirmation changes nothing;
        a presented quote that stopped waiting for this answer is accepted all the same,
        as the deal is won by it."""
        if self.status == QuoteStatus.ACCEPTED:
            return
        self._require(QuoteAction.CONFIRM_ACCEPTANCE)
        self.accepted_at = now
        self._move(QuoteStatus.ACCEPTED, now)
        self.events.append(
            QuoteAccepted(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                total=self.total,
                lines=[line.data() for line in self.lines],
                accepted_at=now,
            )
        )

    def refuse_acceptance(self, reason: str, now: datetime) -> bool:
        """The opportunity refused; back to presented. False if it was not waiting."""
        if self.status != QuoteStatus.ACCEPT_PENDING:
            return False
        self.status_reason = reason
        self._move(QuoteStatus.PRESENTED, now)
        self.events.append(
            QuoteAcceptanceRejected(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                reason=reason,
                rejected_at=now,
            )
        )
        return True

    def chase_acceptance(self, deadline: AcceptanceDeadline, now: datetime) -> bool:
        """The opportunity has not answered by the due time: ask it again while
        `deadline.asks_again` allows, then stop waiting and go back to presented with
        the reason. False when the quote is not awaiting an answer, or not yet due."""
        request = self.acceptance
        if (
            self.status != QuoteStatus.ACCEPT_PENDING
            or request is None
            or request.answer_due_at > now
        ):
            return False
        if request.asked_again < deadline.asks_again:
            self._require(QuoteAction.ASK_AGAIN)
            self.acceptance = replace(
                request,
                answer_due_at=now + deadline.answer_within,
                asked_again=request.asked_again + 1,
            )
            self._move(QuoteStatus.ACCEPT_PENDING, now)
            self._ask_opportunity()
            return True
        self._require(QuoteAction.TIME_OUT)
        waited = round((now - request.requested_at).total_seconds())
        reason = (
            f"no answer from the opportunity service within {waited} s "
            f"(asked {request.asked_again + 1} times); the customer may accept again"
        )
        self.status_reason = reason
        self._move(QuoteStatus.PRESENTED, now)
        self.events.append(
            QuoteAcceptanceRejected(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                reason=reason,
                rejected_at=now,
            )
        )
        return True

    def expire(self, now: datetime) -> bool:
        """Expire a presented quote past its validity; False when it is not due."""
        if self.status != QuoteStatus.PRESENTED or self.valid_until > now:
            return False
        self._move(QuoteStatus.EXPIRED, now)
        self.events.append(
            QuoteExpired(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                valid_until=self.valid_until,
                expired_at=now,
            )
        )
        return True

    # --- internals ------------------------------------------------------------------

    def _ask_opportunity(self) -> None:
        request = self.acceptance
        assert request is not None
        self.events.append(
            QuoteAcceptanceRequested(
                opportunity_id=self.opportunity_id,
                quote_id=self.id,
                total=self.total,
                requested_by=request.requested_by,
                requested_at=request.requested_at,
                via=request.via,
                attempt=request.asked_again + 1,
                answer_by=request.answer_due_at,
            )
        )

    def _require(self, action: QuoteAction) -> None:
        if action not in lifecycle.TRANSITIONS[self.status]:
            raise QuoteActionNotAllowed(self.status, action)

    def _move(self, target: QuoteStatus, now: datetime) -> None:
        self.status = target
        self.updated_at = now
        if not self.version_bumped:
            self.version += 1
            self.version_bumped = True


def _check_lines(lines: list[QuoteLine], currency: str) -> None:
    for index, line in enumerate(lines):
        if line.currency != currency:
            raise CurrencyMismatch(f"lines[{index}].unit_price.currency", line.currency, currency)


def _check_valid_until(valid_until: datetime, now: datetime) -> None:
    if valid_until <= now:
        raise ValidUntilInPast(valid_until)
