"""Recording refused requests (dealflow_common.audit) from the HTTP layer: who asked
(the verified principal, once the bearer token was accepted), what, and why not."""

from __future__ import annotations

from fastapi import Request

from dealflow_common.audit import RefusalAudit, RefusalKind, refusal_kind
from dealflow_common.errors import DomainError

# Path parameters that are credentials (the buy-now link's token): never logged.
_SECRET_PATH_PARAMS = ("token",)


def target_of(request: Request) -> str:
    path = request.url.path
    for name in _SECRET_PATH_PARAMS:
        value = request.path_params.get(name)
        if value:
            path = path.replace(str(value), "{" + name + "}")
    return f"{request.method} {path}"[:500]


def _audit(request: Request) -> RefusalAudit | None:
    platform = getattr(request.app.state, "platform", None)
    audit = getattr(platform, "audit", None)
    return audit if isinstance(audit, RefusalAudit) else None


def record_refusal(request: Request, kind: RefusalKind, reason: str, actor: str | None) -> None:
    audit = _audit(request)
    if audit is not None:
        audit.record(kind, actor=actor, target=target_of(request), reason=reason[:500])


def record_domain_refusal(request: Request, error: DomainError) -> None:
    """Audit a domain error if it refuses access (see `audit.refusal_kind`)."""
    kind = refusal_kind(error)
    if kind is None:
        return
    principal = getattr(request.state, "principal", None)
    reason = error.detail
    if error.hidden:
        reason = f"not visible to the caller (answered as unknown): {error.detail}"
    record_refusal(request, kind, reason, getattr(principal, "user_id", None))
