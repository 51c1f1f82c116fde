"""The load client's HTTP, against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import http as bench_http
from bench.http import JsonClient
from dealflow_common.testing import uvicorn_serving

CONNECTIONS: set[tuple[str, int]] = set()
"""The client ends the server saw, to tell a kept connection from a new one."""


async def echo(request: Request) -> Response:
    client = request.client
    assert client is not None
    CONNECTIONS.add((client.host, client.port))
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "content_type": request.headers.get("content-type"),
            "body": body.decode(),
        },
        status_code=int(request.query_params.get("status", "200")),
    )


async def nothing(request: Request) -> Response:
    return Response(status_code=204)


async def slow(request: Request) -> Response:
    await asyncio.sleep(1)
    return Response(status_code=204)


async def closing(request: Request) -> Response:
    return JSONResponse({"bye": True}, headers={"Connection": "close"})


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    routes = [
        Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
        Route("/nothing", nothing, methods=["POST"]),
        Route("/slow", slow, methods=["POST"]),
        Route("/closing", closing, methods=["POST"]),
    ]
    async with uvicorn_serving(Starlette(routes=routes)) as port:
        CONNECTIONS.clear()
        yield f"http://127.0.0.1:{port}"


async def test_a_json_body_and_the_headers_reach_the_server_and_the_answer_comes_back(
    origin: str,
) -> None:
    async with JsonClient({"Authorization": "Bearer t"}) as client:
        status, answer = await client.request("POST", origin, "/echo/a/b", {"stage": "lead"})
    assert status == 200
    assert answer == {
        "method": "POST",
        "path": "/echo/a/b",
        "authorization": "Bearer t",
        "content_type": "application/json",
        "body": '{"stage":"lead"}',
    }


async def test_no_body_goes_as_an_empty_one_and_no_answer_body_is_none(origin: str) -> None:
    async with JsonClient({}) as client:
        assert await client.request("POST", origin, "/nothing") == (204, None)
        status, answer = await client.request("POST", origin, "/echo/x")
    assert status == 200
    assert answer["body"] == ""


async def test_an_error_status_is_answered_not_raised(origin: str) -> None:
    async with JsonClient({}) as client:
        status, answer = await client.request("GET", origin, "/echo/x?status=409")
    assert status == 409
    assert answer["method"] == "GET"


async def test_a_connection_is_kept_and_concurrent_requests_get_their_own(origin: str) -> None:
    async with JsonClient({}) as client:
        for _ in range(5):
            await client.request("POST", origin, "/echo/one-by-one")
        assert len(CONNECTIONS) == 1
        answers = await asyncio.gather(
            *(client.request("POST", origin, f"/echo/{n}", {"n": n}) for n in range(8))
        )
    # Each answer is its own request's, not another's read off a shared connection.
    assert [a["path"] for _, a in answers] == [f"/echo/{n}" for n in range(8)]
    assert len(CONNECTIONS) == 8


async def test_a_connection_the_server_closes_is_not_reused(origin: str) -> None:
    async with JsonClient({}) as client:
        assert await client.request("POST", origin, "/closing") == (200, {"bye": True})
        status, _ = await client.request("POST", origin, "/echo/after")
    assert status == 200
    assert len(CONNECTIONS) == 1  # the closing answer's connection was not the echo's


async def test_an_idle_connection_past_its_reuse_window_is_replaced(
    origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_http, "IDLE_REUSE_SECONDS", 0.05)
    async with JsonClient({}) as client:
        await client.request("POST", origin, "/echo/first")
        await asyncio.sleep(0.1)
        await client.request("POST", origin, "/echo/second")
    assert len(CONNECTIONS) == 2


async def test_an_answer_that_does_not_come_times_out(origin: str) -> None:
    async with JsonClient({}, timeout=0.2) as client:
        with pytest.raises(TimeoutError):
            await client.request("POST", origin, "/slow")


async def test_it_runs_on_uvloop_as_the_bench_does(origin: str) -> None:
    async def one() -> tuple[int, Any]:
        async with JsonClient({}) as client:
            return await client.request("POST", origin, "/echo/uv", {"on": "uvloop"})

    # The server answers on this test's loop; the client runs on uvloop in a thread.
    status, answer = await asyncio.to_thread(uvloop.run, one())
    assert status == 200
    assert answer["body"] == '{"on":"uvloop"}'


async def test_only_plain_http_origins_are_taken() -> None:
    async with JsonClient({}) as client:
        with pytest.raises(ValueError, match="origin"):
            await client.request("GET", "https://127.0.0.1:1", "/")
