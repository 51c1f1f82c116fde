"""Bearer-token authentication: who is calling, with which roles and teams.

Tokens are JWTs with `sub`, `roles`, `teams`, `exp` and audience `dealflow`, verified
either with the shared HS256 secret (development, tests) or with the keys published
at a JWKS URL (an enterprise identity provider). With a JWKS URL only the identity
provider's tokens are accepted, unless HS256 is explicitly allowed as well: otherwise
anyone holding the shared secret could mint tokens beside it. There is no bypass: a
request to a business endpoint without a valid token is answered 401.

Claims are checked strictly (docs/security.md): `sub` a non-empty string, `roles` and
`teams` lists of strings, `exp` (and `nbf`, `iat` when present) JSON numbers, never
strings or booleans, and `exp` at most a year ahead. PyJWT on its own converts
`"exp": "9999999999"` with `int()` and accepts `exp = 10**30`: a token that never
expires. A token longer than `max_token_bytes` is refused before it is parsed, and the
verified-token cache is bounded by bytes as well as by count, so large tokens cannot
grow a process without bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
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


MAX_TOKEN_BYTES = 8_192
"""The default cap on a token's length: identity providers' tokens are 1-2 KB."""

LONGEST_LIFETIME_SECONDS = 366 * 86_400
"""A token whose `exp` lies further ahead is refused: no identity provider issues one,
and a cache entry must not live for ever."""

_MAX_CLAIM_ITEMS = 100
_MAX_SUB_LENGTH = 200
_MAX_TEAM_LENGTH = 100


class TokenVerifier:
    """Verifies tokens, remembering the ones it verified until they expire.

    A client sends the same token on every call; checking its signature once is enough.
    The cache is bounded by count and by the bytes of the tokens it keys on, and an
    entry is dropped at `exp`.
    """

    _CACHE_SIZE = 10_000
    _CACHE_BYTES = 8 * 1024 * 1024

    def __init__(
        self,
        *,
        secret: SecretStr | None,
        jwks_url: str | None,
        audience: str,
        issuer: str | None = None,
        allow_hs256: bool = False,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        jwks_cache_seconds: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Without `jwks_url`, HS256 tokens signed with `secret`; with it, the identity
        provider's tokens, and HS256 ones as well only when `allow_hs256`."""
        if secret is None and not jwks_url:
            raise ValueError("a token verifier needs a secret or a JWKS URL")
        if jwks_url and allow_hs256 and secret is None:
            raise ValueError("allowing HS256 beside a JWKS URL needs the HS256 secret")
        hs256 = secret is not None and (not jwks_url or allow_hs256)
        self._secret = secret.get_secret_value() if secret and hs256 else None
        # The key set is cached for `jwks_cache_seconds`; a `kid` it lacks (a new key)
        # fetches it again, at most once per cooldown, so tokens naming made-up keys
        # cannot make every request a call to the identity provider. Not `cache_keys`:
        # its lru_cache would keep honouring a withdrawn key until the process restarts.
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                cache_keys=False,
                lifespan=jwks_cache_seconds,
                cooldown_duration=min(30.0, jwks_cache_seconds),
            )
            if jwks_url
            else None
        )
        self._audience = audience
        self._issuer = issuer
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cached_bytes = 0

    @property
    def cached_bytes(self) -> int:
        """The length of the tokens remembered now (what bounds the cache's memory)."""
        return self._cached_bytes

    @property
    def cached_tokens(self) -> int:
        return len(self._verified)

    async def verify(self, token: str) -> Principal:
        if len(token) > self._max_token_bytes:
            raise InvalidToken(f"the token is longer than {self._max_token_bytes} bytes")
        known = self._verified.get(token)
        if known is not None:
            if known[1] > self._clock():
                self._verified.move_to_end(token)
                return known[0]
            self._forget(token)
        principal, expires = await self._verify_signature(token)
        self._verified[token] = (principal, expires)
        self._cached_bytes += len(token)
        while len(self._verified) > self._CACHE_SIZE or self._cached_bytes > self._CACHE_BYTES:
            oldest, _ = self._verified.popitem(last=False)
            self._cached_bytes -= len(oldest)
        return principal

    def _forget(self, token: str) -> None:
        del self._verified[token]
        self._cached_bytes -= len(token)

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
            # The claims' types first: PyJWT would read `"exp": "9999999999"` with int().
            _check_claim_types(jwt.decode(token, options={"verify_signature": False}))
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
        expires = float(claims["exp"])
        if expires > self._clock() + LONGEST_LIFETIME_SECONDS:
            raise InvalidToken("exp lies more than a year ahead")
        return _principal(claims), expires


def _is_number(value: object) -> bool:
    """A JSON number that a float holds exactly enough: not a string, not a boolean
    (an int in Python), not 1e400 (parsed as infinity) nor a 400-digit integer."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53
    return isinstance(value, float) and math.isfinite(value)


def _is_text(value: object, longest: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest and "\x00" not in value


def _check_claim_types(claims: object) -> None:
    """Refuses claims of the wrong JSON type, whatever their signature."""
    if not isinstance(claims, dict):
        raise InvalidToken("the claims must be a JSON object")
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            raise InvalidToken(f"{name} must be a number (a NumericDate)")
    if "sub" in claims and not _is_text(claims["sub"], _MAX_SUB_LENGTH):
        raise InvalidToken(f"sub must be a non-empty string of at most {_MAX_SUB_LENGTH} chars")
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise InvalidToken("iss must be a string")
    for name, longest in (("roles", 50), ("teams", _MAX_TEAM_LENGTH)):
        value = claims.get(name, [])
        if (
            not isinstance(value, list)
            or len(value) > _MAX_CLAIM_ITEMS
            or not all(_is_text(item, longest) for item in value)
        ):
            raise InvalidToken(
                f"{name} must be a list of at most {_MAX_CLAIM_ITEMS} non-empty strings"
            )


def _principal(claims: dict[str, Any]) -> Principal:
    known = set(Role.__members__.values())
    roles = frozenset(Role(r) for r in claims.get("roles", []) if r in known)
    return Principal(user_id=claims["sub"], roles=roles, teams=frozenset(claims.get("teams", [])))


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
