"""Every business route of every service is served by a planned handler (`http.lean`).

A route FastAPI's handler has to serve instead (a dependency with `yield`, a sync
dependency) would still answer correctly, but would quietly cost the CPU the planned
handler saves on every request; this says which route, so that the choice is made on
purpose.
"""

from __future__ import annotations

import importlib

import pytest
from fastapi.routing import APIRoute

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
