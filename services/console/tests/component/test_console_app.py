"""The console's server side over HTTP: the gateway, the sign-in and the app's files.

The services behind the gateway are a small FastAPI app reached through httpx's ASGI
transport (a fake network); the browser app itself is tested in a real browser
(tests/integration/test_console.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from dealflow_common.auth import TokenVerifier
from dealflow_console.bootstrap import build_app
from dealflow_console.settings import ConsoleSettings

SECRET = "console-component-tests-secret-0123456789abcdef"


def settings(**overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {
        "console_dev_sign_in": True,
        "jwt_secret": SECRET,
        "opportunity_url": "http://opportunity.test",
        "purge_url": "http://purge.test/",
    }
    values.update(overrides)
    return ConsoleSettings(**values)


def upstream() -> FastAPI:
    """A service that answers with what it was sent."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(path: str, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "host": request.url.hostname,
                "method": request.method,
                "path": f"/{path}",
                "query": request.url.query,
                "body": (await request.body()).decode(),
                "headers": {k: v for k, v in request.headers.items()},
            },
            status_code=409 if path.endswith("refuse") else 200,
            headers={"ETag": '"7"', "Set-Cookie": "tracking=1"},
        )

    return app


@pytest.fixture
async def console() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings(), transport=httpx.ASGITransport(app=upstream()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://console.test"
        ) as client,
    ):
        yield client


async def test_a_call_reaches_the_service_with_the_callers_token_and_nothing_else(
    console: httpx.AsyncClient,
) -> None:
    answer = await console.post(
        "/api/opportunity/opportunities/42/stage?x=1&x=2",
        json={"stage": "proposal"},
        headers={
            "Authorization": "Bearer the-users-token",
            "If-Match": '"6"',
            "Cookie": "session=secret",
        },
    )
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["host"] == "opportunity.test"
    assert (seen["method"], seen["path"], seen["query"]) == (
        "POST",
        "/opportunities/42/stage",
        "x=1&x=2",
    )
    assert seen["body"] == '{"stage":"proposal"}'
    assert seen["headers"]["authorization"] == "Bearer the-users-token"
    assert seen["headers"]["if-match"] == '"6"'
    assert "cookie" not in seen["headers"]
    assert answer.headers["etag"] == '"7"'
    assert "set-cookie" not in answer.headers


async def test_a_refusal_comes_back_as_the_service_answered(console: httpx.AsyncClient) -> None:
    answer = await console.delete("/api/purge/purge/refuse")
    assert answer.status_code == 409
    assert answer.json()["host"] == "purge.test"


async def test_an_unknown_service_is_not_found(console: httpx.AsyncClient) -> None:
    answer = await console.get("/api/reporting/pipeline")  # no reporting URL configured
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "reporting" in answer.json()["detail"]


async def test_a_body_over_the_limit_is_refused_before_it_is_forwarded(
    console: httpx.AsyncClient,
) -> None:
    answer = await console.post("/api/opportunity/opportunities", content=b"x" * 1_048_577)
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_a_service_that_does_not_answer_is_a_502_to_retry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = build_app(settings(), transport=httpx.MockTransport(refuse))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console.test"
    ) as client:
        answer = await client.get("/api/opportunity/opportunities")
    assert answer.status_code == 502
    assert answer.headers["retry-after"] == "2"
    assert "opportunity" in answer.json()["detail"]


async def test_the_development_sign_in_mints_a_short_token_the_services_accept(
    console: httpx.AsyncClient,
) -> None:
    answer = await console.post("/auth/dev-token", json={"user": "ben"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["expires_in"] == 3600
    principal = await TokenVerifier(
        secret=SecretStr(SECRET), jwks_url=None, audience="dealflow", issuer=None
    ).verify(body["access_token"])
    assert principal.user_id == "ben"
    assert {r.value for r in principal.roles} == {"rep"}
    assert principal.teams == frozenset({"team-2"})


async def test_only_development_users_get_a_token(console: httpx.AsyncClient) -> None:
    answer = await console.post("/auth/dev-token", json={"user": "mallory"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "user"


async def test_with_an_identity_provider_there_is_no_development_sign_in() -> None:
    app = build_app(
        settings(
            console_dev_sign_in=False,
            console_oidc_issuer="https://login.example.com/realms/x/",
            console_oidc_client_id="console",
        )
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console.test"
    ) as client:
        config = (await client.get("/auth/config")).json()
        minted = await client.post("/auth/dev-token", json={"user": "ana"})
    assert config["dev_sign_in"] is False
    assert config["dev_users"] == []
    assert config["oidc"] == {
        "issuer": "https://login.example.com/realms/x",
        "client_id": "console",
        "scope": "openid profile",
    }
    assert minted.status_code == 404


async def test_the_app_is_served_with_a_strict_content_security_policy(
    console: httpx.AsyncClient,
) -> None:
    index = await console.get("/")
    assert index.status_code == 200
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["cache-control"] == "no-cache"
    module = await console.get("/static/js/main.js")
    assert module.status_code == 200
    assert "javascript" in module.headers["content-type"]
    assert (await console.get("/readyz")).status_code == 200


def test_the_console_refuses_to_start_with_no_way_to_sign_in() -> None:
    with pytest.raises(ValueError, match="nobody could sign in"):
        ConsoleSettings(console_dev_sign_in=False)
    with pytest.raises(ValueError, match="needs DEALFLOW_JWT_SECRET"):
        ConsoleSettings(console_dev_sign_in=True, jwt_secret=None)
    with pytest.raises(ValueError, match="both"):
        ConsoleSettings(console_dev_sign_in=True, jwt_secret=SECRET, console_oidc_issuer="x")
