"""Bearer tokens: verified once, remembered until they expire, never beyond; with an
identity provider's JWKS, HS256 only when explicitly allowed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from dealflow_common.auth import InvalidToken, Role, TokenVerifier, mint_token
from dealflow_common.settings import ServiceSettings

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
    # Issued at a whole second, a one-second token may have expired before its first use
    # on a loaded machine: it lives three, and the test waits until just past its end.
    now = int(time.time())
    token = mint_token(SECRET, sub="alice", roles=["rep"], teams=[], ttl_seconds=3, now=now)
    assert (await check.verify(token)).user_id == "alice"
    assert (await check.verify(token)).user_id == "alice"  # from memory
    await asyncio.sleep(now + 3 - time.time() + 0.2)
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


# --- an identity provider's keys (JWKS) ----------------------------------------------


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[tuple[str, Any]]:
    """A JWKS endpoint on localhost with one RSA key: (its URL, the private key)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256", "use": "sig"}]})

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json", private_key
    server.shutdown()
    server.server_close()


def provider_token(private_key: Any, sub: str = "carol") -> str:
    claims = {"sub": sub, "aud": "dealflow", "exp": int(time.time()) + 60, "roles": ["rep"]}
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": "idp-1"})


def hs256_token() -> str:
    return mint_token(SECRET, sub="mallory", roles=["admin"], teams=[], now=int(time.time()))


async def test_with_a_jwks_url_only_the_identity_providers_tokens_are_accepted(
    identity_provider: tuple[str, Any],
) -> None:
    url, private_key = identity_provider
    check = TokenVerifier(secret=SecretStr(SECRET), jwks_url=url, audience="dealflow")

    assert (await check.verify(provider_token(private_key))).user_id == "carol"
    with pytest.raises(InvalidToken, match="HS256 tokens are not accepted"):
        await check.verify(hs256_token())


async def test_hs256_beside_a_jwks_url_only_when_explicitly_allowed(
    identity_provider: tuple[str, Any],
) -> None:
    url, private_key = identity_provider
    check = TokenVerifier(
        secret=SecretStr(SECRET), jwks_url=url, audience="dealflow", allow_hs256=True
    )

    assert (await check.verify(provider_token(private_key))).user_id == "carol"
    assert (await check.verify(hs256_token())).user_id == "mallory"


async def test_without_a_jwks_url_hs256_is_the_mode_whatever_the_setting() -> None:
    for allow in (False, True):
        check = TokenVerifier(
            secret=SecretStr(SECRET), jwks_url=None, audience="dealflow", allow_hs256=allow
        )
        assert (await check.verify(hs256_token())).user_id == "mallory"


def test_allowing_hs256_without_its_secret_is_refused(monkeypatch) -> None:
    with pytest.raises(ValueError, match="HS256"):
        TokenVerifier(
            secret=None, jwks_url="http://idp/jwks", audience="dealflow", allow_hs256=True
        )
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DEALFLOW_JWT_JWKS_URL", "http://idp/jwks")
    assert ServiceSettings().jwt_allow_hs256 is False
    monkeypatch.setenv("DEALFLOW_JWT_ALLOW_HS256", "true")
    with pytest.raises(ValueError, match="DEALFLOW_JWT_ALLOW_HS256 needs DEALFLOW_JWT_SECRET"):
        ServiceSettings()
