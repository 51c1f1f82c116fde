"""Refusals are logged with actor, target and reason, and counted by kind."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from dealflow_common.audit import RefusalAudit, RefusalKind, refusal_kind
from dealflow_common.errors import (
    NotFound,
    NotPermitted,
    RuleViolated,
    StaleVersion,
    TransitionNotAllowed,
)


def test_a_refusal_is_one_log_line_and_one_count(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    audit = RefusalAudit(registry)

    with caplog.at_level(logging.WARNING, logger="dealflow.audit"):
        audit.record(
            RefusalKind.NOT_VISIBLE, actor="mallory", target="GET /opportunities/x", reason="why"
        )

    (record,) = caplog.records
    assert (record.audit, record.kind, record.actor, record.target, record.reason) == (  # type: ignore[attr-defined]
        "refusal",
        "not_visible",
        "mallory",
        "GET /opportunities/x",
        "why",
    )
    assert registry.get_sample_value("dealflow_refusals_total", {"kind": "not_visible"}) == 1
    assert registry.get_sample_value("dealflow_refusals_total", {"kind": "token"}) == 0


def test_an_unknown_caller_is_anonymous(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dealflow.audit"):
        RefusalAudit(CollectorRegistry()).record(
            RefusalKind.TOKEN, actor=None, target="GET /x", reason="expired"
        )
    assert caplog.records[0].actor == "anonymous"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (NotFound("opportunity", 1).unseen(), RefusalKind.NOT_VISIBLE),
        (NotFound("opportunity", 1), None),  # truly unknown: no one was refused anything
        (NotPermitted("no"), RefusalKind.FORBIDDEN),
        (
            TransitionNotAllowed("opportunity", "lead", "move to closed_won", []),
            RefusalKind.TRANSITION,
        ),
        (RuleViolated("title", "bad"), None),
        (StaleVersion("opportunity", 1, 2), None),
    ],
)
def test_which_domain_errors_are_refusals(error: Exception, kind: RefusalKind | None) -> None:
    assert refusal_kind(error) == kind  # type: ignore[arg-type]
