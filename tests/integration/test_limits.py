"""The platform's limits and token rules on the real services, over real sockets.

Forged tokens, a 1.4 MB token, a 10 MB body (declared, and streamed without a length),
NUL in bodies and query strings, the per-caller rate limit (on a process of its own
started with a low limit), `Allow` on an unsupported method and the `/metrics` media
type, each as a client on the network would meet it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from dealflow_common.testing import new_schema_name
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: str, secret: str, alg: str = "HS256") -> str:
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    signing_input = f"{head}.{b64(payload.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def forged_tokens(secret: str) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "mallory", "aud": "dealflow", "exp": now + 600, "roles": ["admin"]}

    def with_(**changes: Any) -> str:
        return json.dumps({k: v for k, v in {**good, **changes}.items() if v is not None})

    none_alg = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(with_().encode())}."
    return {
        "alg none": none_alg,
        "another key": jwt.encode(good, "another-secret-of-at-least-32-characters!", "HS256"),
        "expired": signed(with_(exp=now - 10), secret),
        "not yet valid": signed(with_(nbf=now + 600), secret),
        "wrong audience": signed(with_(aud="another-api"), secret),
        "no sub": signed(with_(sub=None), secret),
        "exp as a string": signed(with_(exp="9999999999"), secret),
        "exp 10^30": signed(with_(exp=10**30), secret),
        "roles not a list": signed(with_(roles="admin"), secret),
        "teams of numbers": signed(with_(teams=[1, 2]), secret),
        "sub a number": signed(with_(sub=7), secret),
        "too long": signed(with_(padding="p" * 9_000), secret),
    }


async def test_forged_tokens_are_refused_by_a_real_service(stack: Stack) -> None:
    url = stack.services["opportunity"].url
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for name, forged in forged_tokens(stack.jwt_secret).items():
            response = await client.get(
                "/opportunities", headers={"Authorization": f"Bearer {forged}"}
            )
            assert response.status_code == 401, name
            assert response.headers["content-type"] == "application/problem+json", name
            assert response.headers["www-authenticate"].startswith("Bearer"), name


async def test_a_validly_signed_megabyte_token_is_refused_431_before_verification(
    stack: Stack,
) -> None:
    huge = signed(
        json.dumps(
            {
                "sub": "mallory",
                "aud": "dealflow",
                "exp": int(time.time()) + 600,
                "padding": "p" * 1_400_000,
            }
        ),
        stack.jwt_secret,
    )
    async with httpx.AsyncClient(base_url=stack.services["quote"].url, timeout=30) as client:
        for _ in range(3):
            response = await client.get("/quotes", headers={"Authorization": f"Bearer {huge}"})
            assert response.status_code == 431
            assert response.headers["content-type"] == "application/problem+json"


async def test_a_ten_megabyte_body_is_refused_413(
    stack: Stack, as_user: Callable[..., httpx.AsyncClient]
) -> None:
    body = json.dumps({**DEAL, "description": "d" * 10_000_000}).encode()
    async with as_user("opportunity") as client:
        response = await client.post(
            "/opportunities", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["type"] == "urn:dealflow:problem:body-too-large"


async def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(
    stack: Stack, token: Callable[..., str]
) -> None:
    """Chunked: the service answers 413 once it has read past the limit, before the
    client has finished sending (it reads no more of the body)."""
    address = urlsplit(stack.services["opportunity"].url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        b"POST /opportunities HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token('alice', ('rep',))}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"d" * 65_536
    # Far more than the socket buffers on both sides hold (a few MB): a client can push
    # that much only if the service keeps reading, whatever the machine's load.
    offered = 100_000_000
    sent = 0
    try:
        while sent < offered:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            # `drain` does not yield while the socket takes everything, and only a turn of
            # the loop reads the answer: without one, a fast enough service could take all
            # of it, reading past its answer as it does to keep the connection alive.
            await asyncio.sleep(0)
            if reader.at_eof() or len(reader._buffer) > 0:  # type: ignore[attr-defined]
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    status_line = await asyncio.wait_for(reader.readline(), timeout=30)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert sent < offered


async def test_nul_is_refused_in_bodies_and_queries_of_every_service(
    stack: Stack, as_user: Callable[..., httpx.AsyncClient]
) -> None:
    async with as_user("opportunity") as client:
        created = await client.post("/opportunities", json={**DEAL, "title": "a\u0000b"})
        assert created.status_code == 422
        assert created.json()["errors"] == [
            {"field": "title", "message": "must not contain the NUL character (\\u0000)"}
        ]
        listed = await client.get("/opportunities", params={"q": "\u0000"})
        assert listed.status_code == 422
        assert listed.json()["errors"][0]["field"] == "q"
    for service, path in (("quote", "/quotes"), ("sequence", "/tasks"), ("order", "/orders")):
        async with as_user(service, roles=("rep", "manager", "admin", "operator")) as client:
            response = await client.get(f"{path}?x=%00")
            assert response.status_code == 422, service
            assert response.headers["content-type"] == "application/problem+json"


async def test_a_caller_over_the_rate_limit_is_answered_429_with_retry_after(
    stack: Stack, token: Callable[..., str], schemas: list[str]
) -> None:
    schema = new_schema_name("opportunity")
    schemas.append(schema)
    process = stack.service_process("opportunity", schema=schema)
    process.env["DEALFLOW_RATE_LIMIT_PER_SECOND"] = "0.2"
    process.env["DEALFLOW_RATE_LIMIT_BURST"] = "5"
    await process.start()
    try:
        await process.wait_ready(timeout=90)
        alice = {"Authorization": f"Bearer {token('alice', ('rep',))}"}
        bob = {"Authorization": f"Bearer {token('bob', ('rep',))}"}
        async with httpx.AsyncClient(base_url=process.url, timeout=30) as client:
            answers = [
                (await client.get("/opportunities", headers=alice)).status_code for _ in range(5)
            ]
            refused = await client.get("/opportunities", headers=alice)
            other = await client.get("/opportunities", headers=bob)
            health = await client.get("/healthz")
        assert answers == [200] * 5
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:dealflow:problem:rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 5
        assert other.status_code == 200  # per caller
        assert health.status_code == 200  # operational endpoints are not limited
    finally:
        await process.stop()


async def test_an_unsupported_method_lists_the_paths_methods_in_allow(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.services["quote"].url, timeout=30) as client:
        document = (await client.get("/openapi.json")).json()
        for path, item in document["paths"].items():
            concrete = path.replace("{", "").replace("}", "")
            response = await client.request("OPTIONS", concrete)
            assert response.status_code == 405, path
            documented = {m.upper() for m in item if m in {"get", "post", "put", "patch"}}
            documented |= {m.upper() for m in item if m == "delete"}
            assert set(response.headers["allow"].split(", ")) == documented, path


async def test_metrics_are_documented_and_served_as_text(stack: Stack) -> None:
    for service in stack.services.values():
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            document = (await client.get("/openapi.json")).json()
            answer = document["paths"]["/metrics"]["get"]["responses"]["200"]
            assert list(answer["content"]) == ["text/plain"], service.name
            served = await client.get("/metrics")
            assert served.headers["content-type"].startswith("text/plain"), service.name
