"""How a browser gets a token: the sign-in configuration and the development sign-in.

With an identity provider, the browser runs the OpenID Connect authorization-code flow
with PKCE itself (the console only tells it the issuer and client id: a public client,
no secret). In the embedded run, a development sign-in lists made-up users and mints a
short-lived token for the one picked, with the shared development secret, which never
leaves this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from dealflow_common.auth import mint_token
from dealflow_common.http.problems import Problem, field_errors
from dealflow_console.settings import ConsoleSettings


@dataclass(frozen=True)
class DevelopmentUser:
    sub: str
    name: str
    roles: tuple[str, ...]
    teams: tuple[str, ...]


# Two teams so that a rep can be shown not to see the other team's deals.
DEVELOPMENT_USERS = (
    DevelopmentUser("ana", "Ana (rep, team-1)", ("rep",), ("team-1",)),
    DevelopmentUser("ben", "Ben (rep, team-2)", ("rep",), ("team-2",)),
    DevelopmentUser("mia", "Mia (manager, team-1)", ("manager", "rep"), ("team-1",)),
    DevelopmentUser("olga", "Olga (operator)", ("operator",), ()),
    DevelopmentUser("root", "Root (admin)", ("admin",), ()),
)


class DevTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


class DevToken(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


def signin_routes(settings: ConsoleSettings, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["sign-in"])
    users = {u.sub: u for u in DEVELOPMENT_USERS}

    @router.get("/config", summary="How to sign in, and which services are behind the console")
    async def config() -> dict[str, Any]:
        oidc = None
        if settings.console_oidc_issuer:
            oidc = {
                "issuer": settings.console_oidc_issuer.rstrip("/"),
                "client_id": settings.console_oidc_client_id,
                "scope": settings.console_oidc_scope,
            }
        return {
            "dev_sign_in": settings.console_dev_sign_in,
            "dev_users": [asdict(u) for u in DEVELOPMENT_USERS]
            if settings.console_dev_sign_in
            else [],
            "oidc": oidc,
            "services": sorted(settings.upstreams()),
        }

    @router.post("/dev-token", summary="Development only: a short-lived token for a made-up user")
    async def dev_token(body: DevTokenRequest) -> DevToken:
        if not settings.console_dev_sign_in or settings.jwt_secret is None:
            raise Problem(404, "not-found", "Not found", "the development sign-in is off")
        user = users.get(body.user)
        if user is None:
            raise Problem(
                422,
                "validation",
                "Invalid request",
                f"user: not a development user; one of {', '.join(users)}",
                errors=field_errors("user", "not a development user"),
            )
        ttl = settings.console_dev_token_ttl_seconds
        token = mint_token(
            settings.jwt_secret.get_secret_value(),
            sub=user.sub,
            roles=list(user.roles),
            teams=list(user.teams),
            audience=settings.jwt_audience,
            ttl_seconds=ttl,
            now=int(clock()),
        )
        return DevToken(access_token=token, expires_in=ttl)

    return router
