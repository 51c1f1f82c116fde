"""`without_idle_layers`: FastAPI's layers that do nothing for a planned route are left
out of the stack, and every answer stays what the whole stack gives.

A review of the first version found three cases that changed, each a test here: a
planned route under dependency overrides (FastAPI's handler then serves it, and needs
the exit stack), an exception handler that raises another exception, and one that
reads the body the route read.

One table is served twice: as FastAPI builds it, and planned (`lean_routes`), without
the idle layers and routed by shape, as `create_app` serves it. It holds planned routes,
a route FastAPI keeps serving itself (a sync endpoint, whose handler needs the exit
stack the left-out `AsyncExitStackMiddleware` opened), and routes that raise.
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi._body_limit import AppBodyLimitMiddleware
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
from pydantic import BaseModel

from dealflow_common.http.app import NO_NATIVE_TELEMETRY, without_idle_layers
from dealflow_common.http.dispatch import ShapeRouting, route_by_shape
from dealflow_common.http.lean import LEAN, lean_routes


class Refused(Exception):
    pass


class Thing(BaseModel):
    name: str


def table() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_NATIVE_TELEMETRY)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return JSONResponse({"refused": request.url.path}, status_code=409)

    @app.post("/things/{id}")
    async def change(id: str, thing: Thing) -> dict[str, str]:
        return {"id": id, "name": thing.name}

    @app.get("/things/{id}/missing")
    async def missing(id: str) -> dict[str, str]:
        raise HTTPException(status_code=404, detail=f"no {id}")

    @app.get("/things/{id}/refused")
    async def refuse(id: str) -> dict[str, str]:
        raise Refused(id)

    @app.get("/sync/{id}")
    def sync(id: str) -> dict[str, str]:
        return {"sync": id}

    return app


REQUESTS = [
    ("POST", "/things/7", {"name": "seven"}),
    ("POST", "/things/7", {"name": 7}),  # 422
    ("GET", "/things/7", None),  # 405
    ("GET", "/things/7/missing", None),
    ("GET", "/things/7/refused", None),
    ("GET", "/sync/7", None),
    ("GET", "/nothing", None),
]


async def served(app: FastAPI) -> list[tuple[int, bytes]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [
            ((r := await client.request(method, path, json=body)).status_code, r.content)
            for method, path, body in REQUESTS
        ]


def layers(app: FastAPI) -> list[type]:
    found, layer = [], app.middleware_stack
    while layer is not None and layer is not app.router:
        found.append(type(layer))
        layer = getattr(layer, "app", None)
    return found


async def test_the_idle_layers_are_left_out_and_every_answer_is_the_same() -> None:
    plain, served_as_ours = table(), table()
    lean_routes(served_as_ours)
    without_idle_layers(served_as_ours)
    route_by_shape(served_as_ours)
    planned = [
        r.path for r in served_as_ours.router.routes if isinstance(r, APIRoute) and hasattr(r, LEAN)
    ]
    assert "/things/{id}" in planned
    assert "/sync/{id}" not in planned

    expected, got = await served(plain), await served(served_as_ours)
    for request, want, have in zip(REQUESTS, expected, got, strict=True):
        assert have == want, request
    assert [status for status, _ in got] == [200, 422, 405, 404, 409, 200, 404]

    left_out = {ExceptionTelemetryMiddleware, AppBodyLimitMiddleware, AsyncExitStackMiddleware}
    assert left_out <= set(layers(plain))
    assert not left_out & set(layers(served_as_ours))
    routing = served_as_ours.router.middleware_stack
    assert isinstance(routing, ShapeRouting)
    assert routing.file_stack


async def test_a_body_limit_keeps_its_layer() -> None:
    app = table()
    app.max_body_size = 10
    lean_routes(app)
    without_idle_layers(app)
    route_by_shape(app)
    assert (await served(app))[0][0] == 413
    assert AppBodyLimitMiddleware in layers(app)


async def test_fastapis_own_telemetry_keeps_its_layer() -> None:
    """The layer is left out for what the app was built with, whatever our tracing
    setting says: with FastAPI's own telemetry on, it reports exceptions."""
    logs_only: TelemetryConfig = {"tracing": False, "metrics": False, "logs": True}
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=logs_only)
    lean_routes(app)
    without_idle_layers(app)
    route_by_shape(app)
    app.middleware_stack = app.build_middleware_stack()
    assert ExceptionTelemetryMiddleware in layers(app)


class Conflict(Exception):
    pass


async def real() -> str:
    return "real"


def edge_cases() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_NATIVE_TELEMETRY)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, error: Conflict) -> JSONResponse:
        raise HTTPException(status_code=409, detail="conflict")  # the next handler answers

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"sent": (await request.body()).decode()}, status_code=422)

    @app.get("/deps/{id}")
    async def with_dependency(id: str, source: str = Depends(real)) -> dict[str, str]:
        return {"id": id, "source": source}

    @app.get("/deps/{id}/conflict")
    async def conflicting(id: str) -> dict[str, str]:
        raise Conflict(id)

    @app.post("/deps/{id}")
    async def change(id: str, thing: Thing) -> dict[str, str]:
        return {"id": id}

    lean_routes(app)
    without_idle_layers(app)
    route_by_shape(app)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_dependency_overrides_reach_fastapis_handler_with_its_exit_stack() -> None:
    app = edge_cases()

    async def fake() -> str:
        return "fake"

    app.dependency_overrides[real] = fake
    async with client(app) as http:
        answer = await http.get("/deps/7")
    assert (answer.status_code, answer.json()) == (200, {"id": "7", "source": "fake"})


async def test_an_exception_raised_by_a_handler_is_handled_by_the_next() -> None:
    async with client(edge_cases()) as http:
        assert (await http.get("/deps/7/conflict")).status_code == 409


async def test_a_handler_reads_the_body_the_route_read() -> None:
    async with client(edge_cases()) as http:
        answer = await asyncio.wait_for(http.post("/deps/7", json={"name": 7}), timeout=5)
    assert answer.json() == {"sent": '{"name":7}'}
