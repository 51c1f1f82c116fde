"""Every business route of every service is served by a planned handler (`http.lean`),
and found by its path's shape (`http.dispatch`) as the whole table finds it.

A route FastAPI's handler has to serve instead (a dependency with `yield`, a sync
dependency) would still answer correctly, but would quietly cost the CPU the planned
handler saves on every request; this says which route, so that the choice is made on
purpose.
"""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match, Route

from dealflow_common.http.dispatch import RouteIndex, ShapeRouting
from dealflow_common.http.lean import LEAN
from dealflow_common.platform import build_platform
from dealflow_common.runtime.processes import installed_services, owns_database, service_module
from dealflow_common.testing import settings_for

SERVICES = {name: s for name, s in installed_services().items() if owns_database(s)}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_route_of_a_service_is_planned(name: str) -> None:
    settings_class = SERVICES[name]
    bootstrap = importlib.import_module(f"{service_module(settings_class)}.bootstrap")
    settings = settings_for(settings_class, "sqlite+aiosqlite:///:memory:", "routes-" + "x" * 40)
    app = bootstrap.build_app(settings, build_platform(settings, publishes=[]))
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) > 5
    unplanned = [f"{sorted(r.methods)} {r.path}" for r in routes if not getattr(r, LEAN, False)]
    assert unplanned == []


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_route_of_a_service_is_found_by_its_shape(name: str) -> None:
    """Routing by shape (`http.dispatch`) picks, for a path made from each route of the
    table, with each parameter given an id or any literal segment of the table (the
    word `search` where `{id}` stands), the route the whole table picks."""
    settings_class = SERVICES[name]
    bootstrap = importlib.import_module(f"{service_module(settings_class)}.bootstrap")
    settings = settings_for(settings_class, "sqlite+aiosqlite:///:memory:", "routes-" + "x" * 40)
    app = bootstrap.build_app(settings, build_platform(settings, publishes=[]))
    assert isinstance(app.router.middleware_stack, ShapeRouting)
    table = app.router.routes
    index = RouteIndex(table)
    routes = [r for r in table if isinstance(r, Route)]
    literals = {s for r in routes for s in r.path.split("/") if s and "{" not in s}
    values = [str(uuid.uuid4()), *sorted(literals)]
    tried = 0
    for route in routes:
        for path in _paths(route.path, values):
            for method in sorted(route.methods or {"GET"}):
                scope = {"type": "http", "method": method, "path": path, "root_path": ""}
                candidates = index.candidates(index.key(path))
                assert _pick(candidates, scope) == _pick(table, scope), (method, path)
                tried += 1
    assert tried >= len(routes) > 5


def _paths(template: str, values: list[str]) -> list[str]:
    """The template with each parameter given each value (parameters vary one at a time,
    the others an id)."""
    segments = template.split("/")
    params = [i for i, s in enumerate(segments) if "{" in s]
    paths = []
    for varied in params or [None]:
        for value in values if varied is not None else [""]:
            filled = [
                (value if i == varied else values[0]) if i in params else s
                for i, s in enumerate(segments)
            ]
            paths.append("/".join(filled))
    return paths


def _pick(routes: list[Any], scope: dict[str, Any]) -> tuple[Any, Any]:
    """The first route matching fully, and the first matching by path only: what
    Starlette's router decides with."""
    full = partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL and full is None:
            full = route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return full, partial
