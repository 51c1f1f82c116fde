"""Composition root of the console: settings, the HTTP client to the services, the app.

The console has no database, broker, outbox or consumer: it serves static files, the
sign-in configuration and the gateway. /readyz is ready as soon as it serves; a service
that is away shows in the app as that service's 502, not as a console that is down.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from dealflow_common.http.app import FlowMiddleware, add_metrics_route, native_telemetry
from dealflow_common.http.problems import install_problem_handlers
from dealflow_common.logs import configure_logging
from dealflow_common.service import load_settings, serve
from dealflow_console.gateway import gateway_routes
from dealflow_console.settings import ConsoleSettings
from dealflow_console.signin import signin_routes

__all__ = ["ConsoleSettings", "build_app", "main"]

STATIC = Path(__file__).parent / "static"
VERSION = "0.1.0"
log = logging.getLogger(__name__)

# The app is plain ES modules: the browser may cache them, but must ask again (a cheap
# 304) so that a new release is picked up on the next load.
_REVALIDATE = {"Cache-Control": "no-cache"}


def security_headers(settings: ConsoleSettings) -> dict[str, str]:
    """The app's page may run only its own scripts and talk only to its own origin and,
    for the sign-in, to the identity provider's (discovery and token endpoints)."""
    connect = "'self'"
    if settings.console_oidc_issuer:
        issuer = httpx.URL(settings.console_oidc_issuer)
        port = f":{issuer.port}" if issuer.port else ""
        connect += f" {issuer.scheme}://{issuer.host}{port}"
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


def build_app(
    settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The console's app; `transport` replaces the network to the services in tests."""
    registry = CollectorRegistry()
    client = httpx.AsyncClient(
        timeout=settings.console_upstream_timeout_seconds,
        follow_redirects=False,
        # An idle connection is dropped before the services' own keep-alive timeout
        # (uvicorn: 5 s) closes it: reusing one the server is closing at that moment
        # fails the call ("server disconnected"), seen under load in the browser tests.
        # A refused connection is tried once more (nothing was sent).
        transport=transport
        or httpx.AsyncHTTPTransport(
            retries=1, limits=httpx.Limits(max_keepalive_connections=50, keepalive_expiry=2.0)
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(
        title="Dealflow console",
        description="The browser app and its gateway to the services' public APIs.",
        version=VERSION,
        lifespan=lifespan,
        telemetry=native_telemetry(),
    )
    page_headers = security_headers(settings)
    install_problem_handlers(app)
    app.add_middleware(FlowMiddleware, registry=registry)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "console"}

    @app.get("/readyz", tags=["operations"], summary="The console serves its app")
    async def readyz() -> JSONResponse:
        ready = (STATIC / "index.html").is_file()
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": {"assets": ready}},
            status_code=200 if ready else 503,
        )

    add_metrics_route(app, registry)

    app.include_router(signin_routes(settings))
    app.include_router(
        gateway_routes(client, settings.upstreams(), settings.console_max_body_bytes)
    )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={**_REVALIDATE, **page_headers})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def static_headers(request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(_REVALIDATE)
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app


def main() -> None:
    settings = load_settings(ConsoleSettings)
    configure_logging("console", settings.log_level, settings.log_format)
    # `serve` and `migrate` as every service has them; the console has nothing to migrate.
    if len(sys.argv) > 1 and sys.argv[1] == "migrate":
        log.info("the console has no database: nothing to migrate")
        return
    serve(settings, build_app, graceful_shutdown_seconds=5)
