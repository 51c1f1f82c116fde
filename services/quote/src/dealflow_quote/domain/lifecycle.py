"""The quote lifecycle: one declarative table, read by the aggregate, the API and docs.

draft -> presented, or through approval when the discount is above the threshold:
draft -> pending_approval -> approved -> presented (approval_rejected or approved ->
draft for rework); presented -> accept_pending -> accepted, or back to presented when
the opportunity refuses; presented -> expired when valid_until passes; any open quote
but one awaiting the opportunity's answer -> abandoned (DESIGN.md names draft and
presented; the others are abandoned too, so that no quote stays open after the deal
is won or lost).

A quote awaiting the opportunity's answer does not wait for ever: without an answer
in time the opportunity is asked again, and after the last attempt the quote times
out back to presented. The opportunity answers no request read after that, but an
answer already on its way when the quote gave up still counts: the opportunity is the
authority, so a presented quote it reports as the winner is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from dealflow_common.contracts.quote import QuoteStatus


class QuoteAction(StrEnum):
    EDIT = "edit"
    SUBMIT_FOR_APPROVAL = "submit_for_approval"
    APPROVE = "approve"
    REJECT_APPROVAL = "reject_approval"
    REWORK = "rework"
    PRESENT = "present"
    ACCEPT = "accept"
    CONFIRM_ACCEPTANCE = "confirm_acceptance"
    """The opportunity was won by this quote."""
    REFUSE_ACCEPTANCE = "refuse_acceptance"
    """The opportunity refused: closed, or won by another quote."""
    ASK_AGAIN = "ask_again"
    """No answer from the opportunity in time: the same request is sent again."""
    TIME_OUT = "time_out"
    """Still no answer after the last attempt: back to presented, the customer is told."""
    ABANDON = "abandon"
    EXPIRE = "expire"


S, A = QuoteStatus, QuoteAction

TRANSITIONS: Final[Mapping[QuoteStatus, Mapping[QuoteAction, QuoteStatus]]] = MappingProxyType(
    {
        S.DRAFT: {
            A.EDIT: S.DRAFT,
            A.SUBMIT_FOR_APPROVAL: S.PENDING_APPROVAL,
            A.PRESENT: S.PRESENTED,
            A.ABANDON: S.ABANDONED,
        },
        S.PENDING_APPROVAL: {
            A.APPROVE: S.APPROVED,
            A.REJECT_APPROVAL: S.APPROVAL_REJECTED,
            A.ABANDON: S.ABANDONED,
        },
        # Rework drops the approval: a changed offer is approved again if it needs it.
        S.APPROVED: {A.PRESENT: S.PRESENTED, A.REWORK: S.DRAFT, A.ABANDON: S.ABANDONED},
        S.APPROVAL_REJECTED: {A.REWORK: S.DRAFT, A.ABANDON: S.ABANDONED},
        S.PRESENTED: {
            A.ACCEPT: S.ACCEPT_PENDING,
            A.EXPIRE: S.EXPIRED,
            A.ABANDON: S.ABANDONED,
            # The opportunity's answer to a request the quote stopped waiting for.
            A.CONFIRM_ACCEPTANCE: S.ACCEPTED,
        },
        S.ACCEPT_PENDING: {
            A.CONFIRM_ACCEPTANCE: S.ACCEPTED,
            A.REFUSE_ACCEPTANCE: S.PRESENTED,
            A.ASK_AGAIN: S.ACCEPT_PENDING,
            A.TIME_OUT: S.PRESENTED,
        },
        S.ACCEPTED: {},
        S.ABANDONED: {},
        S.EXPIRED: {},
    }
)

OPEN: Final = frozenset(s for s in QuoteStatus if TRANSITIONS[s])
"""Statuses from which something can still happen."""

SYSTEM_ACTIONS: Final = frozenset(
    {A.CONFIRM_ACCEPTANCE, A.REFUSE_ACCEPTANCE, A.ASK_AGAIN, A.TIME_OUT, A.EXPIRE}
)
"""Done by the saga or the scheduled jobs, never through the API."""


_ALLOWED: Final = MappingProxyType(
    {
        status: tuple(
            a for a in QuoteAction if a in TRANSITIONS[status] and a not in SYSTEM_ACTIONS
        )
        for status in QuoteStatus
    }
)
"""`allowed_actions` of each status, listed once: every quote's answer carries them."""


def allowed_actions(status: QuoteStatus) -> list[QuoteAction]:
    """What a person may do with a quote in `status` (for 409 answers and the API)."""
    return list(_ALLOWED[status])


def mermaid_diagram() -> str:
    lines = ["stateDiagram-v2", "    [*] --> draft"]
    for source, by_action in TRANSITIONS.items():
        for action, target in by_action.items():
            if source != target:
                lines.append(f"    {source.value} --> {target.value}: {action.value}")
    return "\n".join(lines) + "\n"
