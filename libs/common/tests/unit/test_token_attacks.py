"""Tokens as an attacker forges them: each is refused, whatever else it gets right.

The identity provider is a real HTTP server on the loopback interface serving a JWKS
that the tests rotate, so key rotation is exercised the way an identity provider does
it: a new key appears (tokens naming it are accepted at once), then the old key goes
(tokens naming it are refused once the key set is fetched again).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from dealflow_common.auth import InvalidToken, TokenVerifier, mint_token

SECRET = "a-development-secret-of-at-least-32-chars"


def verifier(**options: Any) -> TokenVerifier:
    return TokenVerifier(secret=SecretStr(SECRET), jwks_url=None, audience="dealflow", **options)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "mallory",
        "aud": "dealflow",
        "exp": int(time.time()) + 600,
        "roles": ["rep"],
        "teams": ["emea"],
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_raw(header: dict[str, Any], payload_json: str, key: bytes) -> str:
    """A token signed by hand, for payloads PyJWT would not encode (`exp` as a string)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload_json.encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def refused(check: TokenVerifier, token: str, reason: str | None = None) -> str:
    with pytest.raises(InvalidToken, match=f"(?i){reason}" if reason else None) as raised:
        await check.verify(token)
    return str(raised.value)


async def test_the_reference_token_is_accepted() -> None:
    # The attacks below change one thing each from this token.
    assert (await verifier().verify(hs256(claims()))).user_id == "mallory"


async def test_alg_none_is_refused_in_every_spelling() -> None:
    for alg in ("none", "None", "NONE", "nOnE"):
        token = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}."
        token += f"{b64(json.dumps(claims()).encode())}."
        await refused(verifier(), token)


async def test_a_wrong_signature_is_refused() -> None:
    await refused(verifier(), hs256(claims(), "another-secret-that-is-also-32-chars-long"))
    token = hs256(claims())
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    await refused(verifier(), f"{head}.{payload}.{flipped}")
    # The payload of an honest token changed under its signature (roles raised):
    forged = b64(json.dumps(claims(roles=["admin"])).encode())
    await refused(verifier(), f"{head}.{forged}.{signature}", "Signature verification failed")


async def test_expired_and_not_yet_valid_tokens_are_refused() -> None:
    now = int(time.time())
    await refused(verifier(), hs256(claims(exp=now - 5)), "expired")
    await refused(verifier(), hs256(claims(nbf=now + 300)), "not yet valid")
    await refused(verifier(), hs256(claims(iat=now - 10, exp=None)), "exp")


async def test_a_wrong_audience_or_issuer_is_refused() -> None:
    await refused(verifier(), hs256(claims(aud="another-api")), "audience")
    await refused(verifier(), hs256(claims(aud=None)), "aud")
    await refused(verifier(), hs256(claims(aud=["a", "b"])), "audience")
    with_issuer = verifier(issuer="https://idp.example")
    assert (await with_issuer.verify(hs256(claims(iss="https://idp.example")))).user_id
    await refused(with_issuer, hs256(claims(iss="https://evil.example")), "issuer")
    await refused(with_issuer, hs256(claims()), "iss")


async def test_a_token_without_a_subject_is_refused() -> None:
    await refused(verifier(), hs256(claims(sub=None)), "sub")
    await refused(verifier(), hs256(claims(sub="")), "sub")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('"exp": "9999999999"', "exp must be a number"),
        ('"exp": 1000000000000000000000000000000', "exp must be a number"),
        ('"exp": 1e400', "exp must be a number"),
        ('"exp": true', "exp must be a number"),
        ('"exp": 99999999999', "exp lies more than a year ahead"),
        ('"nbf": "0"', "nbf must be a number"),
        ('"iat": [1]', "iat must be a number"),
        ('"sub": 42', "sub must be"),
        ('"sub": ["alice"]', "sub must be"),
        ('"sub": "al\\u0000ice"', "sub must be"),
        ('"roles": "admin"', "roles must be a list"),
        ('"roles": [["admin"]]', "roles must be a list"),
        ('"roles": [null]', "roles must be a list"),
        ('"teams": {"emea": true}', "teams must be a list"),
        ('"teams": [7]', "teams must be a list"),
        ('"teams": [""]', "teams must be a list"),
        ('"iss": 5', "iss must be a string"),
    ],
)
async def test_claims_of_the_wrong_type_are_refused(payload: str, reason: str) -> None:
    fields = {"sub": '"mallory"', "aud": '"dealflow"', "exp": str(int(time.time()) + 600)}
    name = payload.split(":", 1)[0].strip('"')
    fields[name] = payload.split(":", 1)[1].strip()
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    token = signed_raw({"alg": "HS256", "typ": "JWT"}, raw, SECRET.encode())
    await refused(verifier(), token, reason)


async def test_a_huge_token_is_refused_before_it_is_verified_or_remembered() -> None:
    check = verifier()
    padding = "x" * 1_400_000
    huge = hs256(claims(padding=padding))
    message = await refused(check, huge, "longer than 8192 bytes")
    assert "8192" in message
    assert check.cached_tokens == 0
    assert check.cached_bytes == 0


async def test_the_cache_of_verified_tokens_is_bounded_by_bytes() -> None:
    check = verifier(max_token_bytes=8_192)
    check._CACHE_BYTES = 64 * 1024  # type: ignore[misc]
    now = int(time.time())
    tokens = [hs256(claims(sub=f"user-{i}", padding="p" * 5_000, iat=now)) for i in range(40)]
    for token in tokens:
        assert (await check.verify(token)).user_id.startswith("user-")
    assert check.cached_bytes <= 64 * 1024
    assert check.cached_tokens < 40
    # The oldest were forgotten, not refused: verified again when they come back.
    assert (await check.verify(tokens[0])).user_id == "user-0"


# --- HS256 / RS256 confusion and key rotation, with a real JWKS server --------------


class IdentityProvider:
    """A JWKS endpoint on 127.0.0.1 whose key set the test changes."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        provider = self

        class Keys(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": [provider.jwk(kid) for kid in provider.keys]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"

    def jwk(self, kid: str) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**public, "kid": kid, "alg": "RS256", "use": "sig"}

    def add_key(self, kid: str) -> Any:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def token(self, kid: str, key: Any = None, **changes: Any) -> str:
        private = key if key is not None else self.keys[kid]
        return jwt.encode(claims(**changes), private, algorithm="RS256", headers={"kid": kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def identity_provider() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.stop()


async def test_an_hs256_token_signed_with_the_providers_public_key_is_refused(
    identity_provider: IdentityProvider,
) -> None:
    """The classic confusion: the RSA public key (public by design) used as an HMAC secret."""
    identity_provider.add_key("k1")
    public_pem = (
        identity_provider.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    forged = signed_raw(
        {"alg": "HS256", "typ": "JWT", "kid": "k1"}, json.dumps(claims()), public_pem
    )
    only_provider = TokenVerifier(
        secret=SecretStr(SECRET), jwks_url=identity_provider.url, audience="dealflow"
    )
    await refused(only_provider, forged, "HS256 tokens are not accepted")
    both = TokenVerifier(
        secret=SecretStr(SECRET),
        jwks_url=identity_provider.url,
        audience="dealflow",
        allow_hs256=True,
    )
    await refused(both, forged, "Signature verification failed")


async def test_an_rs256_token_is_refused_without_a_jwks_url(
    identity_provider: IdentityProvider,
) -> None:
    identity_provider.add_key("k1")
    await refused(verifier(), identity_provider.token("k1"), "RS256")


async def test_a_token_signed_by_a_key_the_provider_does_not_publish_is_refused(
    identity_provider: IdentityProvider,
) -> None:
    identity_provider.add_key("k1")
    check = TokenVerifier(secret=None, jwks_url=identity_provider.url, audience="dealflow")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Named after the published key, signed by another: the signature does not hold.
    await refused(check, identity_provider.token("k1", key=stranger), "Signature")
    await refused(check, identity_provider.token("unknown", key=stranger), "signing key")


async def test_the_providers_key_rotation_is_followed(
    identity_provider: IdentityProvider,
) -> None:
    identity_provider.add_key("2026-old")
    check = TokenVerifier(
        secret=None,
        jwks_url=identity_provider.url,
        audience="dealflow",
        jwks_cache_seconds=0.5,
    )
    assert (await check.verify(identity_provider.token("2026-old", sub="a"))).user_id == "a"

    # A new key is published: a token naming it is accepted (the set is fetched again
    # for the unknown kid, once the cooldown since the last fetch has passed), and the
    # old key still works while it is published.
    identity_provider.add_key("2026-new")
    await asyncio.sleep(0.6)  # the cooldown: min(30 s, the key set's cache lifetime)
    assert (await check.verify(identity_provider.token("2026-new", sub="b"))).user_id == "b"
    assert (await check.verify(identity_provider.token("2026-old", sub="c"))).user_id == "c"

    # The old key is withdrawn: once the key set is fetched again, a new token signed
    # with it is refused.
    old_key = identity_provider.keys.pop("2026-old")
    fetches = identity_provider.fetches
    await asyncio.sleep(0.6)  # the key set's cache lifetime (PyJWKClient reads the real clock)
    await refused(check, identity_provider.token("2026-old", key=old_key, sub="d"), "signing key")
    assert identity_provider.fetches > fetches
    assert (await check.verify(identity_provider.token("2026-new", sub="e"))).user_id == "e"


async def test_dev_tokens_stay_accepted() -> None:
    token = mint_token(SECRET, sub="alice", roles=["rep"], teams=["t"], now=int(time.time()))
    assert (await verifier().verify(token)).teams == frozenset({"t"})
