"""The FastAPI application every service serves: its routers plus the operational endpoints.

`/healthz` (the process answers), `/readyz` (200 only while the database and the broker
answer), `/metrics` (Prometheus text) and `/asyncapi.json` need no token; every router
a service adds is expected to require one.

Every request passes `RequestLimits` (header and body size, NUL) before any route, and
every authenticated one the per-caller rate limit; the OpenAPI document states these
answers (413, 422, 429, 431) on each operation they apply to, so a service inherits
both the protection and its documentation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dealflow_common.context import flow
from dealflow_common.http.dispatch import ShapeRouting, route_by_shape
from dealflow_common.http.fields import NUL_RULE
from dealflow_common.http.lean import lean_routes
from dealflow_common.http.limits import RequestLimits
from dealflow_common.http.problems import PLATFORM_PROBLEMS, install_problem_handlers
from dealflow_common.http.ratelimit import RateLimiter
from dealflow_common.metrics import LoopCounter, LoopHistogram
from dealflow_common.platform import Platform
from dealflow_common.telemetry import tracing_enabled
from dealflow_common.uow import work_scope

CORRELATION_HEADER = "x-correlation-id"
_OPERATIONAL = frozenset({"/healthz", "/readyz", "/metrics"})


class FlowMiddleware:
    """Puts each request in a flow (its correlation id) and measures it.

    A pure ASGI middleware: Starlette's BaseHTTPMiddleware costs a task per request.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = LoopCounter(
            "dealflow_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = LoopHistogram(
            "dealflow_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        # Each (method, route, status)'s children, found once: `labels()` validates and
        # looks them up under a lock on every call, about 1 % of a request's CPU.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = None
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                correlation_id = value.decode("latin-1")[:100] or None
                break
        request_id = str(uuid.uuid4())
        status = 500
        started = time.perf_counter()
        with flow(correlation_id, f"request:{request_id}") as ctx, work_scope():

            async def send_with_headers(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((b"x-correlation-id", ctx.correlation_id.encode("latin-1")))
                    headers.append((b"x-request-id", request_id.encode()))
                    message["headers"] = headers
                await send(message)

            try:
                await self.app(scope, receive, send_with_headers)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                if path not in _OPERATIONAL:
                    key = (scope["method"], path, status)
                    children = self._children.get(key)
                    if children is None:
                        method = key[0]
                        children = self._children[key] = (
                            self.requests.labels(method, path, str(status)),
                            self.latency.labels(method, path),
                        )
                    children[0].inc()
                    children[1].observe(time.perf_counter() - started)


def create_app(
    platform: Platform,
    *,
    title: str,
    description: str,
    version: str,
    routers: Iterable[APIRouter],
    asyncapi: dict[str, Any],
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    settings = platform.settings
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        telemetry=native_telemetry(),
    )
    app.state.token_verifier = platform.token_verifier
    app.state.platform = platform
    app.state.rate_limiter = (
        RateLimiter(per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
        if settings.rate_limit_per_second > 0
        else None
    )
    install_problem_handlers(app)
    # Added first, so it runs inside FlowMiddleware: its refusals carry correlation ids
    # and are counted like any other answer.
    app.add_middleware(
        RequestLimits,
        max_header_bytes=settings.http_max_header_bytes,
        max_body_bytes=settings.http_max_body_bytes,
    )
    app.add_middleware(FlowMiddleware, registry=platform.registry)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": platform.settings.service_name}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The database and the broker answer",
        responses={503: {"description": "Not ready: `checks` names what does not answer"}},
    )
    async def readyz() -> JSONResponse:
        checks = await platform.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    add_metrics_route(app, platform.registry)

    @app.get(
        "/asyncapi.json",
        tags=["operations"],
        summary="AsyncAPI: what this service publishes and consumes",
    )
    async def asyncapi_document() -> dict[str, Any]:
        return asyncapi

    for router in routers:
        # Its routes join the app's own table, in order, rather than `include_router`'s
        # nested router: FastAPI walks an included router's routes twice a request (to
        # see whether it matches, then to pick the route): 47 µs of a 229 µs request
        # through this stack, measured in-process. A router's prefix, tags and responses are already
        # in each of its routes.
        app.router.routes.extend(router.routes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=f"{app.description}\n\n{PLATFORM_RULES}",
                routes=app.routes,
            )
            app.openapi_schema = document_platform_answers(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if not tracing_enabled():
        # Each route's handler planned once (`http.lean`); with tracing on, FastAPI's own
        # handler stays, with the spans it makes.
        lean_routes(app)
        without_idle_layers(app)
    else:
        # Imported here: with tracing off the instrumentation is not even loaded.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # A span per request, named by its route; probes and scrapes are not traced.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="/healthz,/readyz,/metrics", exclude_spans=["receive", "send"]
        )
    # A request tries only the routes its path's shape could match (`http.dispatch`).
    route_by_shape(app)
    return app


NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry, all of it off."""


def native_telemetry() -> TelemetryConfig | None:
    """FastAPI's `telemetry` setting for an app built now: off while our tracing is off.

    Left on, FastAPI asks on every request whether a tracer, meter or logger provider is
    configured, and each question reads the environment: about 2 % of the quote service's
    CPU under the deal benchmark (py-spy), for nothing, since the services export metrics
    to Prometheus and log on their own. With tracing on, FastAPI keeps its defaults, next
    to the instrumentation `create_app` installs."""
    return None if tracing_enabled() else NO_NATIVE_TELEMETRY


def without_idle_layers(app: FastAPI) -> None:
    """Leaves out of `app`'s middleware stack the layers FastAPI adds that do nothing for
    a planned route (`http.lean`), each an awaited call on every request.

    - `ExceptionTelemetryMiddleware` reports an exception to FastAPI's own telemetry:
      when the app was built with it all off (`NO_NATIVE_TELEMETRY`), it only re-raises.
    - `AppBodyLimitMiddleware` enforces FastAPI's `max_body_size`, which no app or route
      of ours sets (`RequestLimits` bounds bodies): it only passes the request on.
    - `AsyncExitStackMiddleware` opens an exit stack that FastAPI's own handlers close
      uploaded files with; a planned route takes no files. Routing by shape
      (`http.dispatch`) gives the stack to every request it hands to FastAPI's router.

    A layer is left out only when that holds for this app; a FastAPI whose modules
    moved leaves the stack whole."""
    try:
        from fastapi._body_limit import AppBodyLimitMiddleware
        from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
        from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    except ImportError:  # pragma: no cover - another FastAPI: nothing is left out
        return
    # Asked of the app itself, not of our tracing setting: an app built with FastAPI's
    # telemetry on keeps the layer. An app that no longer keeps its configuration there
    # keeps it too.
    config = getattr(app, "_telemetry", None)
    telemetry_off = isinstance(config, dict) and not any(
        config.get(signal, True) for signal in ("tracing", "metrics", "logs")
    )
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        # Built at the first request, when every route is in the table.
        no_body_limit = app.max_body_size is None and not any(
            getattr(route, "max_body_size", None) is not None for route in app.router.routes
        )

        routing = app.router.middleware_stack

        def idle(layer: Any) -> bool:
            if isinstance(layer, ExceptionTelemetryMiddleware):
                return telemetry_off
            if isinstance(layer, AsyncExitStackMiddleware) and isinstance(routing, ShapeRouting):
                routing.file_stack = True  # routing by shape opens the stack instead
                return True
            # Without a limit it wraps nothing (`wrap_app_with_body_limit`).
            return isinstance(layer, AppBodyLimitMiddleware) and no_body_limit

        stack = build()
        outer: Any = stack
        while (inner := getattr(outer, "app", None)) is not None and inner is not app.router:
            if idle(inner):
                outer.app = inner.app
            else:
                outer = inner
        return stack

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


PLATFORM_RULES = (
    "Every service: " + NUL_RULE + " Request line and headers are limited in size (431), "
    "request bodies too (413), and each caller's request rate (429 with Retry-After); "
    "see docs/security.md for the limits and their settings."
)


def _absent_not_null(parameter: dict[str, Any]) -> None:
    """An optional header or query parameter is left out, it is never `null`: FastAPI
    writes `str | None` as `anyOf: [string, null]`, which clients (schemathesis among
    them) send as the text "null"."""
    schema = parameter.get("schema", {})
    options = schema.get("anyOf")
    if parameter.get("in") in {"header", "query"} and isinstance(options, list):
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            del schema["anyOf"]
            schema.update(kept[0])


def document_platform_answers(document: dict[str, Any]) -> dict[str, Any]:
    """Adds to each operation the answers the platform gives before its route runs."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            for parameter in operation.get("parameters", []):
                _absent_not_null(parameter)
            answers = operation.setdefault("responses", {})
            if any(
                p.get("in") == "header" and p.get("name", "").lower() == "if-match"
                for p in operation.get("parameters", [])
            ):
                answers.setdefault("412", PLATFORM_PROBLEMS[412])
            statuses = [422, 431]  # NUL in the query string; headers too large
            if "requestBody" in operation:
                statuses.append(413)
            if operation.get("security"):
                statuses.append(429)
            for status in statuses:
                answers.setdefault(str(status), PLATFORM_PROBLEMS[status])
    return document


def add_metrics_route(app: FastAPI, registry: CollectorRegistry) -> None:
    """`GET /metrics`: the registry in Prometheus' text exposition format."""

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
