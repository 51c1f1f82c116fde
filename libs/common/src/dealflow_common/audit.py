"""Refusals, audited: who was refused what, and why.

A security team reads refusals to see someone probing the API: a bearer token that was
refused, a record the caller may not see (answered 404, exactly as an unknown id, so
only this log tells the two apart), a change the caller's roles or grant do not allow
(403), and a move the state machine forbids (409). Each is one structured log line
(`audit: "refusal"`, with actor, target and reason) and one count in
`dealflow_refusals_total{kind}`.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter

from dealflow_common.errors import DomainError, NotPermitted, TransitionNotAllowed

log = logging.getLogger("dealflow.audit")

ANONYMOUS = "anonymous"


class RefusalKind(StrEnum):
    TOKEN = "token"
    """No bearer token, or one that was not valid (401)."""
    NOT_VISIBLE = "not_visible"
    """A record that exists but that the caller may not see (answered 404)."""
    FORBIDDEN = "forbidden"
    """A change the caller's roles or grant do not allow (403)."""
    TRANSITION = "transition"
    """A move the state machine forbids (409): a stage move, a quote or enrollment action."""


def refusal_kind(error: DomainError) -> RefusalKind | None:
    """The audited kind of a domain refusal; None for one that is no refusal of access
    (an unknown id, invalid input, a stale version)."""
    if error.hidden:
        return RefusalKind.NOT_VISIBLE
    if isinstance(error, NotPermitted):
        return RefusalKind.FORBIDDEN
    if isinstance(error, TransitionNotAllowed):
        return RefusalKind.TRANSITION
    return None


class RefusalAudit:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = Counter(
            "dealflow_refusals",
            "Requests refused: bad token, record not visible, not permitted, forbidden move",
            ["kind"],
            registry=registry,
        )
        for kind in RefusalKind:
            self.refusals.labels(kind.value)  # every kind shows, at 0, from the start

    def record(self, kind: RefusalKind, *, actor: str | None, target: str, reason: str) -> None:
        self.refusals.labels(kind.value).inc()
        log.warning(
            "refused %s: %s on %s: %s",
            kind.value,
            actor or ANONYMOUS,
            target,
            reason,
            extra={
                "audit": "refusal",
                "kind": kind.value,
                "actor": actor or ANONYMOUS,
                "target": target,
                "reason": reason,
            },
        )
