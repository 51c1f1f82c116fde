"""Bearer-token authentication: who is calling, with which roles and teams.

Tokens are JWTs with `sub`, `roles`, `teams`, `exp` and audience `dealflow`, verified
either with the shared HS256 secret (development, tests) or with the keys published
at a JWKS URL (an enterprise identity provider). With a JWKS URL only the identity
provider's tokens are accepted, unless HS256 is explicitly allowed as well: otherwise
anyone holding the shared secret could mint tokens beside it. There is no bypass: a
request to a business endpoint without a valid token is answered 401.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from pydantic import SecretStr


class Role(StrEnum):
    REP = "rep"
    MANAGER = "manager"
    ADMIN = "admin"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    roles: frozenset[Role]
    teams: frozenset[str]

    def has_any(self, *roles: Role) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def sees_everything(self) -> bool:
        return self.has_any(Role.ADMIN, Role.OPERATOR)


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or not signed by a trusted key."""


_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class TokenVerifier:
    """Verifies tokens, remembering the ones it verified until they expire.

    A client sends the same token on every call; checking its signature once is enough.
    The cache is bounded, keyed by the whole token, and an entry is dropped at `exp`.
    """

    _CACHE_SIZE = 10_000

    def __init__(
        self,
        *,
        secret: SecretStr | None,
        jwks_url: str | None,
        audience: str,
        issuer: str | None = None,
        allow_hs256: bool = False,
    ) -> None:
        """Without `jwks_url`, HS256 tokens signed with `secret`; with it, the identity
        provider's tokens, and HS256 ones as well only when `allow_hs256`."""
        if secret is None and not jwks_url:
            raise ValueError("a token verifier needs a secret or a JWKS URL")
        if jwks_url and allow_hs256 and secret is None:
            raise ValueError("allowing HS256 beside a JWKS URL needs the HS256 secret")
        hs256 = secret is not None and (not jwks_url or allow_hs256)
        self._secret = secret.get_secret_value() if secret and hs256 else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        self._audience = audience
        self._issuer = issuer
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if known[1] > time.time():
                self._verified.move_to_end(token)
                return known[0]
            del self._verified[token]
        principal, expires = await self._verify_signature(token)
        self._verified[token] = (principal, expires)
        if len(self._verified) > self._CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify_signature(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") == "HS256":
                if self._secret is None:
                    raise InvalidToken("HS256 tokens are not accepted: use the identity provider's")
                key: Any = self._secret
                algorithms = ["HS256"]
            elif self._jwks is not None:
                # The JWKS client fetches over blocking HTTP (cached afterwards).
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                key = signing_key.key
                algorithms = _ASYMMETRIC
            else:
                raise InvalidToken(f"tokens signed with {header.get('alg')!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp", "aud"]},
            )
        except InvalidToken:
            raise
        except (jwt.PyJWTError, ValueError) as error:
            raise InvalidToken(str(error)) from None
        return _principal(claims), float(claims["exp"])


def _principal(claims: dict[str, Any]) -> Principal:
    roles_claim = claims.get("roles", [])
    teams_claim = claims.get("teams", [])
    if not isinstance(roles_claim, list) or not isinstance(teams_claim, list):
        raise InvalidToken("roles and teams must be lists")
    roles = frozenset(Role(r) for r in roles_claim if r in Role.__members__.values())
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("sub must be a non-empty string")
    return Principal(user_id=sub, roles=roles, teams=frozenset(str(t) for t in teams_claim))


def mint_token(
    secret: str,
    *,
    sub: str,
    roles: list[str],
    teams: list[str],
    audience: str = "dealflow",
    ttl_seconds: int = 8 * 3600,
    now: int,
) -> str:
    """An HS256 development token; production tokens come from the identity provider."""
    return jwt.encode(
        {
            "sub": sub,
            "roles": roles,
            "teams": teams,
            "aud": audience,
            "iat": now,
            "exp": now + ttl_seconds,
        },
        secret,
        algorithm="HS256",
    )
