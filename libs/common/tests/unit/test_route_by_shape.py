"""Routing by path shape (`http.dispatch`) answers every request as the whole table does.

The same table is served twice, routed as Starlette routes (every route in order) and by
shape, and every request of a list must get the same status, headers and body from both:
routes whose order decides (`/things/search` before `/things/{id}`), a route matching by
path but not by method (405), paths no route takes (404), the redirect to the path with
or without its trailing slash, `path` parameters, typed parameters, a mount, the root.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from dealflow_common.http.dispatch import RouteIndex, ShapeRouting, route_by_shape
from dealflow_common.http.lean import LEAN, lean_routes


def table() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    router = APIRouter()

    def answer(name: str):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> dict[str, object]:
            return {
                "route": name,
                "params": request.path_params,
                "url": str(request.url_for(name, **request.path_params)),
            }

        return endpoint

    routes = [
        ("GET", "/", "root"),
        ("GET", "/things/search", "search"),
        ("GET", "/things/{id}", "thing"),
        ("POST", "/things/{id}/stage", "stage"),
        ("GET", "/things/{id}/history", "history"),
        ("PUT", "/things/{id}/stage", "stage_put"),
        ("GET", "/things/", "things_slash"),
        ("POST", "/things", "things"),
        ("GET", "/numbers/{n:int}", "number"),
        ("GET", "/numbers/{name}", "number_name"),
        ("GET", "/files/{rest:path}", "files"),
        ("GET", "/{anything}/stage", "any_stage"),
        ("GET", "/v{version}/info", "versioned"),
        ("DELETE", "/things/{id}", "delete_thing"),
    ]
    for method, path, name in routes:
        router.add_api_route(path, answer(name), methods=[method], name=name)
    app.router.routes.extend(router.routes)

    async def mounted(scope, receive, send):  # type: ignore[no-untyped-def]
        await PlainTextResponse(f"mounted {scope['path']}")(scope, receive, send)

    app.router.routes.append(Mount("/static", app=mounted))
    return app


REQUESTS = [
    ("GET", "/"),
    ("GET", "/things/search"),
    ("GET", "/things/42"),
    ("DELETE", "/things/42"),
    ("PATCH", "/things/42"),
    ("POST", "/things/42/stage"),
    ("PUT", "/things/42/stage"),
    ("GET", "/things/42/stage"),
    ("DELETE", "/things/42/stage"),
    ("GET", "/things/42/history"),
    ("GET", "/things/42/history/"),
    ("GET", "/things/"),
    ("GET", "/things"),
    ("POST", "/things"),
    ("POST", "/things/"),
    ("GET", "/numbers/7"),
    ("GET", "/numbers/seven"),
    ("GET", "/files/a/b/c.txt"),
    ("GET", "/files/"),
    ("GET", "/other/stage"),
    ("GET", "/things/stage"),
    ("POST", "/other/stage"),
    ("GET", "/v2/info"),
    ("GET", "/v/info"),
    ("GET", "/static/app.js"),
    ("GET", "/static"),
    ("GET", "/nothing/here/at/all"),
    ("GET", "/things//stage"),
    ("GET", "//"),
    ("HEAD", "/things/42"),
]


async def served(app: FastAPI) -> list[tuple[int, dict[str, str], bytes]]:
    transport = httpx.ASGITransport(app=app)
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for method, path in REQUESTS:
            response = await client.request(method, path, follow_redirects=False)
            headers = {k: v for k, v in response.headers.items() if k != "content-length"}
            answers.append((response.status_code, headers, response.content))
    return answers


async def test_routing_by_shape_answers_as_the_whole_table() -> None:
    plain, shaped = table(), table()
    route_by_shape(shaped)
    assert isinstance(shaped.router.middleware_stack, ShapeRouting)
    expected, got = await served(plain), await served(shaped)
    for request, want, have in zip(REQUESTS, expected, got, strict=True):
        assert have == want, request
    statuses = {status for status, _, _ in expected}
    # The table exercises every outcome: found, redirected, not found, wrong method.
    assert {200, 307, 404, 405} <= statuses


async def test_planned_routes_are_called_without_fastapis_router_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request fully matching a planned route (`http.lean`) goes straight to its app;
    every other request (a 405, a route FastAPI serves itself) through FastAPI's router,
    and every answer is the whole table's."""
    plain, shaped = table(), table()
    expected = await served(plain)
    lean_routes(shaped)
    planned = [r for r in shaped.router.routes if getattr(r, LEAN, False)]
    assert planned, "the table's routes are planned"
    planned[0].__dict__.pop(LEAN)  # one route FastAPI keeps serving through its router
    route_by_shape(shaped)
    handled: list[str] = []
    handle = APIRoute.handle

    async def counted(self: APIRoute, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        handled.append(scope["method"] + " " + self.path)
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    got = await served(shaped)
    for request, want, have in zip(REQUESTS, expected, got, strict=True):
        assert have == want, request
    # Through the router: the route left unplanned, and the paths matched but not by method.
    assert handled == [
        "GET /",  # the unplanned route, asked for as `/` and as `//`
        "PATCH /things/{id}",
        "GET /things/{id}/stage",
        "DELETE /things/{id}/stage",
        "GET /things",
        "POST /things/",
        "POST /{anything}/stage",
        "GET /",
        "HEAD /things/{id}",
    ], handled


async def test_a_route_added_after_startup_is_routed() -> None:
    app = table()
    route_by_shape(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/things/42/notes")).status_code == 404

        @app.get("/things/{id}/notes")
        async def notes(id: str) -> dict[str, str]:
            return {"notes": id}

        answer = await client.get("/things/42/notes")
    assert answer.status_code == 200
    assert answer.json() == {"notes": "42"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/things/42/stage", ["stage", "stage_put", "files", None]),
        ("/things/search", ["search", "thing", "files", "delete_thing", None]),
        ("/things/abc", ["thing", "files", "delete_thing", None]),
        ("/other/stage", ["files", "any_stage", None]),
        ("/v2/info", ["files", "versioned", None]),
        ("/nothing/here/at/all", ["files", None]),
    ],
)
def test_the_candidates_keep_the_tables_order(path: str, expected: list[str | None]) -> None:
    index = RouteIndex(table().router.routes)
    names = [getattr(route, "name", None) for route in index.candidates(index.key(path))]
    # A `path` parameter's route and the mount (None) cannot be told by shape: always
    # candidates, where the table has them.
    assert names == expected


def test_paths_of_lengths_no_route_has_are_one_shape() -> None:
    """However many segments a caller sends, the shapes (and the copies of the router
    kept per shape) stay as many as the table's."""
    index = RouteIndex(table().router.routes)
    keys = {index.key("/x" * n) for n in range(4, 200)}
    assert len(keys) == 1
    assert [getattr(r, "name", None) for r in index.candidates(keys.pop())] == ["files", None]


def test_a_convertor_of_ones_own_is_tried_on_every_path() -> None:
    """Its pattern may take a `/`: the index cannot tell its route's length."""

    class Dotted(StringConvertor):
        regex = r"[a-z.]+(/[a-z.]+)?"

    register_url_convertor("dotted", Dotted())
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/names/{name:dotted}")
    async def named(name: str) -> dict[str, str]:
        return {"name": name}

    index = RouteIndex(app.router.routes)
    assert [r.path for r in index.candidates(index.key("/names/a.b/c"))] == [  # type: ignore[attr-defined]
        "/names/{name:dotted}"
    ]
