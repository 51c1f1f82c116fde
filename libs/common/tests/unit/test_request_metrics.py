"""Each request is counted and timed under its method, its route's template and its
status; probes and scrapes are not."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry

from dealflow_common.http.app import FlowMiddleware


def counted_app() -> tuple[FastAPI, CollectorRegistry]:
    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise HTTPException(404)
        return {"id": thing_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(FlowMiddleware, registry=registry)
    return app, registry


async def test_requests_are_counted_and_timed_by_method_route_and_status() -> None:
    app, registry = counted_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dealflow.test"
    ) as client:
        for path in ("/things/1", "/things/2", "/things/missing", "/things/3", "/healthz"):
            await client.get(path)
        await client.post("/things/1")  # no such operation: a 405 of the same route

    def count(method: str, status: str) -> float | None:
        labels = {"method": method, "route": "/things/{thing_id}", "status": status}
        return registry.get_sample_value("dealflow_http_requests_total", labels)

    assert (count("GET", "200"), count("GET", "404"), count("POST", "405")) == (3, 1, 1)
    timed = registry.get_sample_value(
        "dealflow_http_request_duration_seconds_count",
        {"method": "GET", "route": "/things/{thing_id}"},
    )
    assert timed == 4
    probes = registry.get_sample_value(
        "dealflow_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
    )
    assert probes is None
