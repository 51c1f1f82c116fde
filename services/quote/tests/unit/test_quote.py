"""The Quote aggregate's rules, one behaviour per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import BillingPeriod, QuoteStatus
from dealflow_common.errors import StaleVersion
from dealflow_quote.domain.errors import (
    ApprovalNotNeeded,
    ApprovalRequired,
    CurrencyMismatch,
    QuoteActionNotAllowed,
    ValidUntilInPast,
)
from dealflow_quote.domain.lifecycle import QuoteAction
from dealflow_quote.domain.model import AcceptanceDeadline, AcceptanceRequest, Quote
from dealflow_quote.domain.pricing import QuoteLine

LineOf = Callable[..., QuoteLine]
QuoteAt = Callable[..., Quote]

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
THRESHOLD = Decimal(10)
OPPORTUNITY = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
DEADLINE = AcceptanceDeadline(timedelta(minutes=2), asks_again=2)


def _types(quote: Quote) -> list[str]:
    return [e.event_type for e in quote.events]


def _draft(lines: list[QuoteLine], valid_until: datetime = LATER, currency: str = "USD") -> Quote:
    return Quote.draft(
        opportunity_id=OPPORTUNITY,
        currency=currency,
        lines=lines,
        valid_until=valid_until,
        by="alice",
        now=NOW,
    )


# --- drafting and editing -------------------------------------------------------------


def test_a_new_draft_records_quote_created_with_its_total(line: LineOf) -> None:
    quote = _draft([line("100.00", quantity="2", discount="5"), line("9.99", line_no=2)])

    assert (quote.status, quote.version) == (QuoteStatus.DRAFT, 1)
    assert _types(quote) == ["quote.created"]
    created = quote.events[0]
    assert created.total == Money.of("199.99", "USD")  # type: ignore[attr-defined]
    assert created.line_count == 2  # type: ignore[attr-defined]
    assert created.status == QuoteStatus.DRAFT  # type: ignore[attr-defined]
    assert created.valid_until == LATER  # type: ignore[attr-defined]
    assert (created.quote_id, created.opportunity_id) == (quote.id, OPPORTUNITY)  # type: ignore[attr-defined]


def test_a_line_in_another_currency_is_refused_naming_it(line: LineOf) -> None:
    with pytest.raises(CurrencyMismatch) as refused:
        _draft([line("10.00", line_no=1), line("10.00", currency="EUR", line_no=2)])
    assert refused.value.field == "lines[1].unit_price.currency"
    assert "EUR" in refused.value.detail
    assert "USD" in refused.value.detail


def test_revising_with_a_line_in_another_currency_is_refused(
    quote_at: QuoteAt, line: LineOf
) -> None:
    quote = quote_at(QuoteStatus.DRAFT)
    with pytest.raises(CurrencyMismatch) as refused:
        quote.revise("alice", NOW, lines=[line("5", currency="GBP")])
    assert refused.value.field == "lines[0].unit_price.currency"
    assert (quote.version, quote.events) == (3, [])


@pytest.mark.parametrize("valid_until", [NOW, NOW - timedelta(seconds=1)], ids=["now", "past"])
def test_a_validity_not_in_the_future_is_refused_naming_it(
    line: LineOf, valid_until: datetime
) -> None:
    with pytest.raises(ValidUntilInPast) as refused:
        _draft([line()], valid_until=valid_until)
    assert refused.value.field == "valid_until"


def test_revising_a_draft_records_quote_updated(quote_at: QuoteAt, line: LineOf) -> None:
    quote = quote_at(QuoteStatus.DRAFT)
    new_until = NOW + timedelta(days=90)

    quote.revise("bob", NOW, lines=[line("50.00", quantity="3")], valid_until=new_until)

    assert (quote.status, quote.version, quote.valid_until) == (QuoteStatus.DRAFT, 4, new_until)
    assert _types(quote) == ["quote.updated"]
    updated = quote.events[0]
    assert updated.total == Money.of("150.00", "USD")  # type: ignore[attr-defined]
    assert updated.line_count == 1  # type: ignore[attr-defined]
    assert updated.valid_until == new_until  # type: ignore[attr-defined]
    assert (updated.updated_by, updated.version) == ("bob", 4)  # type: ignore[attr-defined]


def test_the_total_and_discount_follow_the_lines_through_revisions_and_snapshots(
    line: LineOf,
) -> None:
    """They are summed once per list of lines and kept: a revision's new list is summed
    again, and a snapshot, which has its own list, has the same sums."""
    quote = _draft([line("100.00", quantity="2", discount="5")])
    assert (quote.total, quote.discount_percent) == (Money.of("190.00", "USD"), Decimal("5.00"))

    twin = quote.snapshot()
    quote.revise("bob", NOW, lines=[line("50.00", quantity="3")])

    assert (quote.total, quote.discount_percent) == (Money.of("150.00", "USD"), Decimal("0.00"))
    assert twin.lines is not quote.lines
    assert (twin.total, twin.discount_percent) == (Money.of("190.00", "USD"), Decimal("5.00"))
    twin.revise("carol", NOW, lines=[line("10.00", discount="50")])
    assert (twin.total, twin.discount_percent) == (Money.of("5.00", "USD"), Decimal("50.00"))


@pytest.mark.parametrize(
    "status", [QuoteStatus.PRESENTED, QuoteStatus.APPROVED, QuoteStatus.PENDING_APPROVAL], ids=str
)
def test_only_a_draft_can_be_revised(quote_at: QuoteAt, line: LineOf, status: QuoteStatus) -> None:
    quote = quote_at(status)
    lines_before = list(quote.lines)
    with pytest.raises(QuoteActionNotAllowed):
        quote.revise("alice", NOW, lines=[line("1.00")])
    assert (quote.status, quote.version, quote.lines, quote.events) == (
        status,
        3,
        lines_before,
        [],
    )


def test_a_refused_revision_changes_nothing(quote_at: QuoteAt, line: LineOf) -> None:
    quote = quote_at(QuoteStatus.DRAFT)
    lines_before = list(quote.lines)
    with pytest.raises(ValidUntilInPast):
        quote.revise("alice", NOW, lines=[line("1.00")], valid_until=NOW - timedelta(days=1))
    assert quote.lines == lines_before
    assert not quote.lines_changed


# --- presenting and approval -----------------------------------------------------------


def test_a_draft_within_the_threshold_is_presented_directly(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.DRAFT, discount="10")  # exactly the threshold
    quote.present(THRESHOLD, "alice", NOW)
    assert quote.status == QuoteStatus.PRESENTED
    assert _types(quote) == ["quote.presented"]
    assert quote.events[0].total == Money.of("180.00", "USD")  # type: ignore[attr-defined]


def test_presenting_a_draft_above_the_threshold_requires_approval(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.DRAFT, discount="10.01")
    with pytest.raises(ApprovalRequired) as refused:
        quote.present(THRESHOLD, "alice", NOW)
    assert "submit_for_approval" in refused.value.allowed
    assert refused.value.attempted == "present"
    assert (quote.status, quote.version, quote.events) == (QuoteStatus.DRAFT, 3, [])


@pytest.mark.parametrize("discount", ["0", "10"], ids=["none", "at-threshold"])
def test_submitting_a_quote_within_the_threshold_is_refused(
    quote_at: QuoteAt, discount: str
) -> None:
    quote = quote_at(QuoteStatus.DRAFT, discount=discount)
    with pytest.raises(ApprovalNotNeeded) as refused:
        quote.submit_for_approval(THRESHOLD, "alice", NOW)
    assert refused.value.attempted == "submit_for_approval"
    assert (quote.status, quote.version, quote.events) == (QuoteStatus.DRAFT, 3, [])


def test_a_generous_quote_is_presented_after_a_managers_approval(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.DRAFT, discount="20")

    quote.submit_for_approval(THRESHOLD, "alice", NOW)
    assert quote.status == QuoteStatus.PENDING_APPROVAL
    requested = quote.events[-1]
    assert requested.discount_percent == Decimal("20.00")  # type: ignore[attr-defined]
    assert requested.threshold_percent == THRESHOLD  # type: ignore[attr-defined]

    quote.approve("mia", NOW)
    assert (quote.status, quote.approved_by) == (QuoteStatus.APPROVED, "mia")

    quote.present(THRESHOLD, "alice", NOW)  # the discount is still above the threshold
    assert quote.status == QuoteStatus.PRESENTED
    assert _types(quote) == ["quote.approval_requested", "quote.approved", "quote.presented"]


def test_a_rejected_approval_goes_back_to_draft_for_rework(quote_at: QuoteAt, line: LineOf) -> None:
    quote = quote_at(QuoteStatus.PENDING_APPROVAL, discount="40")

    quote.reject_approval("far too generous", "mia", NOW)
    assert (quote.status, quote.status_reason) == (
        QuoteStatus.APPROVAL_REJECTED,
        "far too generous",
    )
    assert _types(quote) == ["quote.approval_rejected"]
    assert quote.events[0].reason == "far too generous"  # type: ignore[attr-defined]

    quote.rework("alice", NOW)
    assert (quote.status, quote.status_reason, quote.approved_by) == (
        QuoteStatus.DRAFT,
        None,
        None,
    )

    quote.revise("alice", NOW, lines=[line("100.00", discount="5")])
    quote.present(THRESHOLD, "alice", NOW)
    assert quote.status == QuoteStatus.PRESENTED


@pytest.mark.parametrize("status", [QuoteStatus.DRAFT, QuoteStatus.APPROVED], ids=str)
def test_a_quote_past_its_validity_cannot_be_presented(
    quote_at: QuoteAt, status: QuoteStatus
) -> None:
    quote = quote_at(status, valid_until=NOW - timedelta(hours=1))
    with pytest.raises(ValidUntilInPast) as refused:
        quote.present(THRESHOLD, "alice", NOW)
    assert refused.value.field == "valid_until"
    assert (quote.status, quote.version, quote.events) == (status, 3, [])


# --- acceptance ------------------------------------------------------------------------


def test_accepting_a_presented_quote_asks_the_opportunity(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.PRESENTED)
    assert quote.request_acceptance("customer", NOW, "buy_now_link", DEADLINE) is True
    assert quote.status == QuoteStatus.ACCEPT_PENDING
    assert _types(quote) == ["quote.acceptance_requested"]
    requested = quote.events[0]
    assert requested.via == "buy_now_link"  # type: ignore[attr-defined]
    assert requested.total == quote.total  # type: ignore[attr-defined]
    assert requested.attempt == 1  # type: ignore[attr-defined]
    assert requested.answer_by == NOW + timedelta(minutes=2)  # type: ignore[attr-defined]
    assert quote.acceptance == AcceptanceRequest(
        "customer", NOW, "buy_now_link", NOW + timedelta(minutes=2), asked_again=0
    )


@pytest.mark.parametrize("overdue", [timedelta(0), timedelta(days=3)], ids=["at-expiry", "after"])
def test_accepting_a_quote_past_its_validity_expires_it_instead(
    quote_at: QuoteAt, overdue: timedelta
) -> None:
    quote = quote_at(QuoteStatus.PRESENTED, valid_until=NOW - overdue)

    assert quote.request_acceptance("customer", NOW, "api", DEADLINE) is False

    assert quote.status == QuoteStatus.EXPIRED
    assert quote.version == 4
    assert _types(quote) == ["quote.expired"]
    assert quote.events[0].valid_until == NOW - overdue  # type: ignore[attr-defined]


def test_a_quote_not_yet_due_is_not_expired(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.PRESENTED, valid_until=NOW + timedelta(seconds=1))
    assert quote.expire(NOW) is False
    assert (quote.status, quote.version, quote.events) == (QuoteStatus.PRESENTED, 3, [])


def test_confirming_acceptance_records_the_lines_in_full(quote_at: QuoteAt, line: LineOf) -> None:
    product = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
    lines = [
        line("1200.00", quantity="2", discount="15", product_id=product, sku="FLEET-1"),
        line(
            "49.99",
            quantity="1.5",
            line_no=2,
            billing="subscription",
            billing_period=BillingPeriod.MONTH,
        ),
    ]
    quote = quote_at(QuoteStatus.ACCEPT_PENDING, lines=lines)

    quote.confirm_acceptance(NOW)

    assert (quote.status, quote.accepted_at) == (QuoteStatus.ACCEPTED, NOW)
    assert _types(quote) == ["quote.accepted"]
    accepted = quote.events[0]
    assert accepted.total == Money.of("2114.98", "USD")  # type: ignore[attr-defined]
    first, second = accepted.lines  # type: ignore[attr-defined]
    assert (first.line_no, first.product_id, first.sku) == (1, product, "FLEET-1")
    assert (first.quantity, first.unit_price) == (Decimal(2), Money.of("1200.00", "USD"))
    assert (first.discount_percent, first.total) == (Decimal(15), Money.of("2040.00", "USD"))
    assert (first.billing, first.billing_period) == ("one_off", None)
    assert (second.line_no, second.quantity) == (2, Decimal("1.5"))
    assert second.total == Money.of("74.98", "USD")
    assert (second.billing, second.billing_period) == ("subscription", BillingPeriod.MONTH)
    assert accepted.lines == [ln.data() for ln in lines]  # type: ignore[attr-defined]


def test_a_repeated_confirmation_changes_nothing(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.ACCEPT_PENDING)
    quote.confirm_acceptance(NOW)
    events, version = list(quote.events), quote.version

    quote.confirm_acceptance(NOW + timedelta(minutes=5))

    assert (quote.status, quote.version, quote.events) == (QuoteStatus.ACCEPTED, version, events)
    assert quote.accepted_at == NOW

    reloaded = quote_at(QuoteStatus.ACCEPTED)
    reloaded.confirm_acceptance(NOW)
    assert (reloaded.status, reloaded.version, reloaded.events) == (QuoteStatus.ACCEPTED, 3, [])


def test_a_refused_acceptance_returns_the_quote_to_presented(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.ACCEPT_PENDING)

    assert quote.refuse_acceptance("won by another quote", NOW) is True

    assert (quote.status, quote.status_reason) == (QuoteStatus.PRESENTED, "won by another quote")
    assert _types(quote) == ["quote.acceptance_rejected"]
    assert quote.events[0].reason == "won by another quote"  # type: ignore[attr-defined]


# --- an acceptance the opportunity does not answer ------------------------------------


def _waiting(quote_at: QuoteAt) -> Quote:
    quote = quote_at(QuoteStatus.PRESENTED)
    quote.request_acceptance("customer", NOW, "api", DEADLINE)
    quote.events.clear()
    return quote


def test_an_answer_not_yet_due_is_waited_for(quote_at: QuoteAt) -> None:
    quote = _waiting(quote_at)
    version = quote.version

    assert (
        quote.chase_acceptance(DEADLINE, NOW + timedelta(minutes=2) - timedelta(seconds=1)) is False
    )

    assert (quote.status, quote.version, quote.events) == (QuoteStatus.ACCEPT_PENDING, version, [])


def test_an_overdue_answer_is_asked_for_again_the_same_request_with_a_new_due_time(
    quote_at: QuoteAt,
) -> None:
    quote = _waiting(quote_at)
    first_due = NOW + timedelta(minutes=2)

    assert quote.chase_acceptance(DEADLINE, first_due) is True

    assert quote.status == QuoteStatus.ACCEPT_PENDING
    assert _types(quote) == ["quote.acceptance_requested"]
    again = quote.events[0]
    assert (again.attempt, again.answer_by) == (2, first_due + timedelta(minutes=2))  # type: ignore[attr-defined]
    assert (again.requested_by, again.requested_at, again.via) == ("customer", NOW, "api")  # type: ignore[attr-defined]
    assert quote.acceptance is not None
    assert (quote.acceptance.asked_again, quote.acceptance.requested_at) == (1, NOW)


def test_after_the_last_attempt_the_quote_stops_waiting_and_is_presented_again(
    quote_at: QuoteAt,
) -> None:
    quote = _waiting(quote_at)
    moment = NOW
    for _ in range(DEADLINE.asks_again):
        moment += DEADLINE.answer_within
        assert quote.chase_acceptance(DEADLINE, moment) is True
    assert quote.status == QuoteStatus.ACCEPT_PENDING
    quote.events.clear()

    assert quote.chase_acceptance(DEADLINE, moment + timedelta(seconds=30)) is False
    assert quote.chase_acceptance(DEADLINE, moment + DEADLINE.answer_within) is True

    assert quote.status == QuoteStatus.PRESENTED
    assert _types(quote) == ["quote.acceptance_rejected"]
    reason = quote.events[0].reason  # type: ignore[attr-defined]
    assert reason == quote.status_reason
    assert reason.startswith("no answer from the opportunity service within 360 s (asked 3 times)")
    assert QuoteAction.ACCEPT in quote.allowed_actions(THRESHOLD)  # the customer may try again
    assert quote.chase_acceptance(DEADLINE, moment + timedelta(hours=1)) is False


def test_with_no_asking_again_the_first_overdue_answer_ends_the_wait(quote_at: QuoteAt) -> None:
    quote = _waiting(quote_at)
    assert quote.chase_acceptance(
        AcceptanceDeadline(timedelta(minutes=2), 0), NOW + timedelta(minutes=2)
    )
    assert _types(quote) == ["quote.acceptance_rejected"]


def test_a_win_reported_after_the_quote_stopped_waiting_still_accepts_it(
    quote_at: QuoteAt,
) -> None:
    quote = _waiting(quote_at)
    quote.chase_acceptance(AcceptanceDeadline(timedelta(minutes=2), 0), NOW + timedelta(minutes=2))
    quote.events.clear()

    quote.confirm_acceptance(NOW + timedelta(minutes=3))

    assert (quote.status, _types(quote)) == (QuoteStatus.ACCEPTED, ["quote.accepted"])


@pytest.mark.parametrize(
    "status", [QuoteStatus.PRESENTED, QuoteStatus.ACCEPTED, QuoteStatus.ABANDONED], ids=str
)
def test_only_a_quote_awaiting_an_answer_is_chased(quote_at: QuoteAt, status: QuoteStatus) -> None:
    quote = quote_at(status)
    assert quote.chase_acceptance(DEADLINE, NOW + timedelta(days=1)) is False
    assert (quote.status, quote.version, quote.events) == (status, 3, [])


def test_abandoning_records_the_previous_status(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.APPROVED)
    quote.abandon("the opportunity was lost", "system:quote", NOW)
    assert (quote.status, quote.status_reason) == (
        QuoteStatus.ABANDONED,
        "the opportunity was lost",
    )
    abandoned = quote.events[0]
    assert abandoned.previous_status == QuoteStatus.APPROVED  # type: ignore[attr-defined]


# --- versions --------------------------------------------------------------------------


def test_one_change_is_one_version_even_with_several_events(quote_at: QuoteAt) -> None:
    # The saga refuses an acceptance on a closed opportunity and abandons the quote in
    # the same unit of work: two events, one new version.
    quote = quote_at(QuoteStatus.ACCEPT_PENDING, version=7)

    quote.refuse_acceptance("the opportunity is closed", NOW)
    quote.abandon("acceptance refused", "system:quote", NOW)

    assert quote.version == 8
    assert _types(quote) == ["quote.acceptance_rejected", "quote.abandoned"]
    assert quote.events[1].previous_status == QuoteStatus.PRESENTED  # type: ignore[attr-defined]


def test_a_new_draft_is_version_one_whatever_it_does_next(line: LineOf) -> None:
    quote = _draft([line()])
    quote.present(THRESHOLD, "alice", NOW)
    assert quote.version == 1
    assert _types(quote) == ["quote.created", "quote.presented"]


def test_check_version_refuses_a_stale_one(quote_at: QuoteAt) -> None:
    quote = quote_at(QuoteStatus.DRAFT, version=5)
    quote.check_version(5)
    quote.check_version(None)
    with pytest.raises(StaleVersion) as stale:
        quote.check_version(4)
    assert (stale.value.expected, stale.value.actual) == (4, 5)


def test_the_author_cannot_approve_their_own_discount(quote_at) -> None:
    from dealflow_common.contracts.quote import QuoteStatus
    from dealflow_quote.domain.errors import SelfApproval

    quote = quote_at(QuoteStatus.PENDING_APPROVAL)
    with pytest.raises(SelfApproval):
        quote.approve(quote.created_by, NOW)
    assert quote.status == QuoteStatus.PENDING_APPROVAL


def test_a_snapshot_is_changed_apart_from_its_original(line: LineOf) -> None:
    """What `recent` keeps and hands out: the list of lines is the snapshot's own, and it
    starts with nothing pending."""
    quote = _draft([line("100.00")])
    twin = quote.snapshot()
    assert (twin.events, twin.lines_changed, twin.version_bumped) == ([], False, False)
    assert twin.lines == quote.lines
    assert twin.lines is not quote.lines

    twin.revise("alice", NOW, lines=[line("50.00"), line("5.00", line_no=2)])
    assert (len(quote.lines), len(twin.lines)) == (1, 2)
    assert twin.version == quote.version + 1  # the snapshot's change moves its version once
    assert _types(quote) == ["quote.created"]
