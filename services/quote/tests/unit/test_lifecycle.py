"""Every (status, action) pair of the quote lifecycle, against a matrix written by hand.

The matrix is the business rule as DESIGN.md section 4 states it, kept apart from
`lifecycle.TRANSITIONS` on purpose: the test fails if the table drifts from the rule.
Each action goes through the aggregate's own command, with that command's own
preconditions met (a discount above the threshold to submit for approval, none to
present, a validity in the past to expire, in the future otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dealflow_common.contracts.quote import QuoteStatus
from dealflow_quote.domain import lifecycle
from dealflow_quote.domain.errors import QuoteActionNotAllowed
from dealflow_quote.domain.lifecycle import QuoteAction
from dealflow_quote.domain.model import AcceptanceDeadline, Quote

QuoteAt = Callable[..., Quote]
S, A = QuoteStatus, QuoteAction

CODES = {
    "DR": S.DRAFT,
    "PA": S.PENDING_APPROVAL,
    "AP": S.APPROVED,
    "AR": S.APPROVAL_REJECTED,
    "PR": S.PRESENTED,
    "AW": S.ACCEPT_PENDING,
    "AC": S.ACCEPTED,
    "AB": S.ABANDONED,
    "EX": S.EXPIRED,
}
# Rows: the action; columns: the quote's status (codes above); a cell is the status the
# action leads to. ".": refused with QuoteActionNotAllowed. "-": ignored, the saga's or
# the scheduled jobs' command reports False / does nothing (a late or repeated message).
# confirm_acceptance of a presented quote: the opportunity's answer arrived after the
# quote stopped waiting for it (time_out); the deal is won by it, so it is accepted.
RULE = """
                     DR  PA  AP  AR  PR  AW  AC  AB  EX
edit                 DR  .   .   .   .   .   .   .   .
submit_for_approval  PA  .   .   .   .   .   .   .   .
approve              .   AP  .   .   .   .   .   .   .
reject_approval      .   AR  .   .   .   .   .   .   .
rework               .   .   DR  DR  .   .   .   .   .
present              PR  .   PR  .   .   .   .   .   .
accept               .   .   .   .   AW  .   .   .   .
confirm_acceptance   .   .   .   .   AC  AC  -   .   .
refuse_acceptance    -   -   -   -   -   PR  -   -   -
ask_again            -   -   -   -   -   AW  -   -   -
time_out             -   -   -   -   -   PR  -   -   -
abandon              AB  AB  AB  AB  AB  .   .   .   .
expire               -   -   -   -   EX  -   -   -   -
"""
SYSTEM = {A.CONFIRM_ACCEPTANCE, A.REFUSE_ACCEPTANCE, A.ASK_AGAIN, A.TIME_OUT, A.EXPIRE}
"""Done by the saga or the scheduled jobs, never offered to a person."""

EVENTS = {
    A.EDIT: ["quote.updated"],
    A.SUBMIT_FOR_APPROVAL: ["quote.approval_requested"],
    A.APPROVE: ["quote.approved"],
    A.REJECT_APPROVAL: ["quote.approval_rejected"],
    A.REWORK: ["quote.reworked"],
    A.PRESENT: ["quote.presented"],
    A.ACCEPT: ["quote.acceptance_requested"],
    A.CONFIRM_ACCEPTANCE: ["quote.accepted"],
    A.REFUSE_ACCEPTANCE: ["quote.acceptance_rejected"],
    A.ASK_AGAIN: ["quote.acceptance_requested"],
    A.TIME_OUT: ["quote.acceptance_rejected"],
    A.ABANDON: ["quote.abandoned"],
    A.EXPIRE: ["quote.expired"],
}


def _matrix() -> dict[tuple[QuoteStatus, QuoteAction], str]:
    rows = [row.split() for row in RULE.strip().splitlines()]
    statuses = [CODES[code] for code in rows[0]]
    cells = {}
    for row in rows[1:]:
        action = QuoteAction(row[0])
        for status, mark in zip(statuses, row[1:], strict=True):
            cells[(status, action)] = mark
    return cells


MATRIX = _matrix()
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
THRESHOLD = Decimal(10)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=30)
ASKS_AGAIN = AcceptanceDeadline(timedelta(minutes=2), asks_again=2)
NO_MORE_ASKING = AcceptanceDeadline(timedelta(minutes=2), asks_again=0)

# What makes each action's own preconditions hold, whatever the status.
SETUP: dict[QuoteAction, dict[str, Any]] = {
    A.SUBMIT_FOR_APPROVAL: {"discount": "20", "valid_until": FUTURE},
    A.PRESENT: {"discount": "0", "valid_until": FUTURE},
    A.EXPIRE: {"valid_until": PAST},
}

COMMANDS: dict[QuoteAction, Callable[[Quote], object]] = {
    A.EDIT: lambda q: q.revise("alice", NOW, valid_until=NOW + timedelta(days=45)),
    A.SUBMIT_FOR_APPROVAL: lambda q: q.submit_for_approval(THRESHOLD, "alice", NOW),
    A.APPROVE: lambda q: q.approve("mia", NOW),
    A.REJECT_APPROVAL: lambda q: q.reject_approval("too generous", "mia", NOW),
    A.REWORK: lambda q: q.rework("alice", NOW),
    A.PRESENT: lambda q: q.present(THRESHOLD, "alice", NOW),
    A.ACCEPT: lambda q: q.request_acceptance("customer", NOW, "api", ASKS_AGAIN),
    A.CONFIRM_ACCEPTANCE: lambda q: q.confirm_acceptance(NOW),
    A.REFUSE_ACCEPTANCE: lambda q: q.refuse_acceptance("won by another quote", NOW),
    A.ASK_AGAIN: lambda q: q.chase_acceptance(ASKS_AGAIN, NOW),
    A.TIME_OUT: lambda q: q.chase_acceptance(NO_MORE_ASKING, NOW),
    A.ABANDON: lambda q: q.abandon("customer went silent", "alice", NOW),
    A.EXPIRE: lambda q: q.expire(NOW),
}


def _allowed_by_rule(status: QuoteStatus) -> list[QuoteAction]:
    return [a for a in QuoteAction if MATRIX[(status, a)] not in (".", "-") and a not in SYSTEM]


def _id(value: object) -> str:
    return str(value)


def test_the_rule_covers_every_status_and_action() -> None:
    assert len(MATRIX) == len(QuoteStatus) * len(QuoteAction) == 117
    assert set(COMMANDS) == set(EVENTS) == set(QuoteAction)


@pytest.mark.parametrize(("status", "action"), list(MATRIX), ids=_id)
def test_action_in_status(quote_at: QuoteAt, status: QuoteStatus, action: QuoteAction) -> None:
    quote = quote_at(status, **SETUP.get(action, {"valid_until": FUTURE}))
    before = (quote.status, quote.version, quote.updated_at)
    mark = MATRIX[(status, action)]

    if mark == ".":
        with pytest.raises(QuoteActionNotAllowed) as refused:
            COMMANDS[action](quote)
        assert refused.value.allowed == [a.value for a in _allowed_by_rule(status)]
        assert (refused.value.state, refused.value.attempted) == (status.value, action.value)
        assert (quote.status, quote.version, quote.updated_at) == before
        assert quote.events == []
    elif mark == "-":
        assert COMMANDS[action](quote) in (False, None)
        assert (quote.status, quote.version, quote.updated_at) == before
        assert quote.events == []
    else:
        result = COMMANDS[action](quote)
        assert result in (True, None)
        assert quote.status == CODES[mark]
        assert quote.version == before[1] + 1
        assert quote.updated_at == NOW
        assert [e.event_type for e in quote.events] == EVENTS[action]
        assert all(e.quote_id == quote.id for e in quote.events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", list(QuoteStatus), ids=_id)
def test_allowed_actions_match_the_rule(quote_at: QuoteAt, status: QuoteStatus) -> None:
    assert lifecycle.allowed_actions(status) == _allowed_by_rule(status)
    offered = _allowed_by_rule(status)
    if status == S.DRAFT:  # no discount above the threshold: presented, not submitted
        offered = [a for a in offered if a != A.SUBMIT_FOR_APPROVAL]
    assert quote_at(status).allowed_actions(THRESHOLD) == offered


def test_a_draft_above_the_threshold_offers_approval_not_presentation(
    quote_at: QuoteAt,
) -> None:
    offered = quote_at(S.DRAFT, discount="25").allowed_actions(THRESHOLD)
    assert A.SUBMIT_FOR_APPROVAL in offered
    assert A.PRESENT not in offered


@pytest.mark.parametrize("status", list(QuoteStatus), ids=_id)
def test_a_quote_is_open_while_anything_can_still_happen(
    quote_at: QuoteAt, status: QuoteStatus
) -> None:
    can_move = any(MATRIX[(status, a)] not in (".", "-") for a in QuoteAction)
    assert quote_at(status).is_open is can_move
    assert can_move is (status not in (S.ACCEPTED, S.ABANDONED, S.EXPIRED))


def test_diagram_has_one_arrow_per_status_changing_transition() -> None:
    diagram = lifecycle.mermaid_diagram().splitlines()
    assert diagram[:2] == ["stateDiagram-v2", "    [*] --> draft"]
    expected = sorted(
        f"    {status.value} --> {CODES[mark].value}: {action.value}"
        for (status, action), mark in MATRIX.items()
        if mark not in (".", "-") and CODES[mark] != status
    )
    assert sorted(diagram[2:]) == expected
    assert len(expected) == 18  # every allowed cell but edit and ask_again (no move)
