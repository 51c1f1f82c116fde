"""FastAPI dependencies for bearer authentication, the per-caller rate limit and role
checks."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from dealflow_common.audit import RefusalKind
from dealflow_common.auth import InvalidToken, Principal, Role, TokenVerifier
from dealflow_common.http.audit import record_refusal
from dealflow_common.http.problems import Problem
from dealflow_common.http.ratelimit import RateLimiter

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dealflow"'}


class _BearerPrincipal(HTTPBearer):
    """The caller: the principal of a valid bearer token, within its rate limit.

    One dependency that reads the `Authorization` header itself, rather than one that
    depends on `HTTPBearer`: FastAPI solves each level of dependencies per request
    (12 µs of a 182 µs request through the platform's stack in-process, 55 µs
    of 165 on a bare app). Being an `HTTPBearer`, it is still documented in
    the OpenAPI document as the bearer scheme every business endpoint requires.
    """

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if not token or scheme.lower() != "bearer":
            record_refusal(request, RefusalKind.TOKEN, "no bearer token", None)
            raise Problem(
                401,
                "unauthorized",
                "Unauthorized",
                "a bearer token is required",
                headers=_CHALLENGE,
            )
        verifier: TokenVerifier = request.app.state.token_verifier
        try:
            principal = await verifier.verify(token)
        except InvalidToken as error:
            record_refusal(
                request,
                RefusalKind.TOKEN,
                f"invalid bearer token: {error}",
                _claimed_subject(token),
            )
            raise Problem(
                401,
                "unauthorized",
                "Unauthorized",
                f"invalid bearer token: {error}",
                headers={**_CHALLENGE, "WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        # Who the caller is, for the audit of a refusal later in this request.
        request.state.principal = principal
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is not None:
            wait = limiter.retry_after(principal.user_id)
            if wait > 0:
                raise Problem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    f"more than {limiter.per_second:g} requests a second on average "
                    f"(bursts of {limiter.burst}); retry after Retry-After seconds",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return principal


current_principal = _BearerPrincipal(
    auto_error=False,
    # The scheme's name in the OpenAPI document, as `HTTPBearer` names it.
    scheme_name="HTTPBearer",
    description="JWT with sub, roles, teams; audience dealflow",
)


def _claimed_subject(token: str) -> str | None:
    """The `sub` a refused token claims, marked as such: it proves nothing, but it is
    what an investigation starts from."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, ValueError, AttributeError):
        return None
    return f"unverified:{str(sub)[:200]}" if sub is not None else None


Caller = Annotated[Principal, Depends(current_principal)]


def requires(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits callers holding at least one of `roles`."""
    names = ", ".join(r.value for r in roles)

    async def check(request: Request, principal: Caller) -> Principal:
        if not principal.has_any(*roles):
            record_refusal(
                request,
                RefusalKind.FORBIDDEN,
                f"needs one of the roles: {names}",
                principal.user_id,
            )
            raise Problem(403, "forbidden", "Forbidden", f"this needs one of the roles: {names}")
        return principal

    return check
