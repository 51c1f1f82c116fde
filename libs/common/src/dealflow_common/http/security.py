"""FastAPI dependencies for bearer authentication and role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dealflow_common.auth import InvalidToken, Principal, Role, TokenVerifier
from dealflow_common.http.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="JWT with sub, roles, teams; audience dealflow")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dealflow"'}


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401, "unauthorized", "Unauthorized", "a bearer token is required", headers=_CHALLENGE
        )
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(credentials.credentials)
    except InvalidToken as error:
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            f"invalid bearer token: {error}",
            headers={**_CHALLENGE, "WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


Caller = Annotated[Principal, Depends(current_principal)]


def requires(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that admits callers holding at least one of `roles`."""
    names = ", ".join(r.value for r in roles)

    async def check(principal: Caller) -> Principal:
        if not principal.has_any(*roles):
            raise Problem(403, "forbidden", "Forbidden", f"this needs one of the roles: {names}")
        return principal

    return check
