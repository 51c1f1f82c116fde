"""Bearer tokens: verified once, remembered until they expire, never beyond."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from pydantic import SecretStr

from dealflow_common.auth import InvalidToken, Role, TokenVerifier, mint_token

SECRET = "a-development-secret-of-at-least-32-chars"


def verifier() -> TokenVerifier:
    return TokenVerifier(secret=SecretStr(SECRET), jwks_url=None, audience="dealflow")


async def test_a_valid_token_names_the_caller_roles_and_teams() -> None:
    token = mint_token(
        SECRET, sub="alice", roles=["rep", "nonsense"], teams=["emea"], now=int(time.time())
    )
    principal = await verifier().verify(token)
    assert (principal.user_id, principal.roles, principal.teams) == (
        "alice",
        frozenset({Role.REP}),
        frozenset({"emea"}),
    )


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    check = verifier()
    token = mint_token(
        SECRET, sub="alice", roles=["rep"], teams=[], ttl_seconds=1, now=int(time.time())
    )
    assert (await check.verify(token)).user_id == "alice"
    assert (await check.verify(token)).user_id == "alice"  # from memory
    await asyncio.sleep(1.2)
    with pytest.raises(InvalidToken):
        await check.verify(token)


async def test_a_token_signed_with_none_or_another_key_is_refused() -> None:
    claims = {"sub": "mallory", "aud": "dealflow", "exp": int(time.time()) + 60, "roles": []}
    for forged in (
        jwt.encode(claims, "another-secret-that-is-also-32-chars-long", algorithm="HS256"),
        jwt.encode(claims, "", algorithm="none"),
    ):
        with pytest.raises(InvalidToken):
            await verifier().verify(forged)
