"""A planned handler (`http.lean`) answers every request as FastAPI's own handler does.

The same routes are served twice, by FastAPI's handler and by the planned one, and every
request of a table (good ones, and each way a request can be wrong) must get the same
status, headers and body from both: validation errors with their locations, the token
dependency's refusal, the dependency cache, status codes set by the endpoint, responses
returned as they are, bodies that are not JSON.

No `from __future__ import annotations` here: FastAPI reads a route's annotations from
the module's globals, and these routes' dependencies are local names.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from dealflow_common.http.lean import LEAN, lean_routes
from dealflow_common.http.problems import Problem, install_problem_handlers


class Money(BaseModel):
    amount: str = Field(pattern=r"^\d+\.\d\d$")
    currency: str = Field(min_length=3, max_length=3)


class ThingRequest(BaseModel):
    title: str = Field(min_length=1, max_length=20)
    value: Money
    tags: list[str] = []


class ThingResponse(BaseModel):
    id: UUID
    title: str
    value: Money
    caller: str
    version: int


class Filter(BaseModel):
    owner: str | None
    limit: int


def routes(calls: dict[str, int]) -> APIRouter:
    """The same routes for each app; `calls` counts how often each dependency ran."""
    router = APIRouter(prefix="/things")

    async def caller(request: Request) -> str:
        calls["caller"] = calls.get("caller", 0) + 1
        token = request.headers.get("authorization", "")
        if token != "Bearer good":
            raise Problem(401, "unauthorized", "Unauthorized", "a bearer token is required")
        return "alice"

    Caller = Annotated[str, Depends(caller)]  # noqa: N806 - a type, as in the platform

    async def admin(who: Caller) -> str:
        if who != "alice":
            raise Problem(403, "forbidden", "Forbidden", "admins only")
        return who

    async def a_filter(
        owner: Annotated[str | None, Query(max_length=5)] = None,
        limit: Annotated[int, Query(ge=1, le=10)] = 5,
    ) -> Filter:
        return Filter(owner=owner, limit=limit)

    @router.post("/{thing_id}", status_code=201)
    async def put_thing(
        thing_id: UUID,
        body: ThingRequest,
        who: Caller,
        response: Response,
        if_match: Annotated[str | None, Header(alias="If-Match", max_length=10)] = None,
    ) -> ThingResponse:
        response.headers["ETag"] = '"1"'
        response.headers["Location"] = f"/things/{thing_id}"
        version = int(if_match.strip('"')) + 1 if if_match and if_match.strip('"').isdigit() else 1
        return ThingResponse(
            id=thing_id, title=body.title, value=body.value, caller=who, version=version
        )

    @router.get("", dependencies=[Depends(admin)])
    async def list_things(
        who: Caller,
        where: Annotated[Filter, Depends(a_filter)],
        tag: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        return {"who": who, "where": where.model_dump(), "tags": tag or []}

    @router.get("/{thing_id}/raw")
    async def raw(thing_id: UUID, who: Caller) -> Response:
        return Response(f"{thing_id} {who}", media_type="text/plain", headers={"X-Raw": "1"})

    @router.post("/{thing_id}/accepted")
    async def accepted(thing_id: int, who: Caller, response: Response) -> dict[str, Any]:
        response.status_code = 202
        return {"id": thing_id, "who": who}

    @router.put("/{thing_id}", status_code=201)
    async def replace(
        thing_id: int, who: Caller, response: Response, request: Request
    ) -> dict[str, Any]:
        if "x-exists" in request.headers:
            response.status_code = 200  # replaced, not created
        return {"id": thing_id}

    @router.delete("/{thing_id}", status_code=204)
    async def remove(thing_id: int, who: Caller) -> None:
        return None

    @router.get("/{thing_id}/wrong")
    async def wrong(thing_id: int) -> ThingResponse:
        return {"id": "not a uuid"}  # type: ignore[return-value]

    @router.patch("/{thing_id}")
    async def patch(
        thing_id: int, who: Caller, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"id": thing_id, "body": body}

    return router


async def raw_errors(request: Request, error: Exception) -> JSONResponse:
    """A validation error as it is raised (every error's type and location, and the body
    it names), so that the comparison sees more than the problem+json made of it."""
    assert isinstance(error, RequestValidationError)
    content = {"errors": jsonable_encoder(error.errors()), "body": repr(error.body)}
    return JSONResponse(content, status_code=422)


def served(lean: bool) -> tuple[FastAPI, dict[str, int]]:
    calls: dict[str, int] = {}
    app = FastAPI()
    install_problem_handlers(app)
    app.add_exception_handler(RequestValidationError, raw_errors)
    app.router.routes.extend(routes(calls).routes)
    if lean:
        lean_routes(app)
    return app, calls


GOOD = {"authorization": "Bearer good"}
THING = "/things/8c3f6f5e-8d47-4a4b-9a31-0bbf2f5f6f10"
VALID = {"title": "A thing", "value": {"amount": "10.00", "currency": "USD"}}

REQUESTS: list[tuple[str, str, dict[str, str], Any]] = [
    # (method, path, headers, body: a JSON value, bytes as they are, or None)
    ("POST", THING, GOOD, VALID),
    ("POST", THING, {**GOOD, "If-Match": '"7"'}, VALID),
    ("POST", THING, {**GOOD, "If-Match": '"12345678901"'}, VALID),
    ("POST", THING, {}, VALID),
    ("POST", THING, {"authorization": "Bearer bad"}, b"not json"),
    ("POST", "/things/not-a-uuid", GOOD, VALID),
    ("POST", "/things/not-a-uuid", GOOD, {"title": "", "value": {"amount": "1"}}),
    ("POST", THING, GOOD, {"title": "x" * 30, "value": {"amount": "1.0", "currency": "US"}}),
    ("POST", THING, GOOD, {**VALID, "tags": "one"}),
    ("POST", THING, GOOD, [VALID]),
    ("POST", THING, GOOD, None),
    ("POST", THING, {**GOOD, "content-type": "application/json"}, b'{"title": "A",'),
    ("POST", THING, {**GOOD, "content-type": "application/json"}, b"{}"),
    ("POST", THING, {**GOOD, "content-type": "text/plain"}, b'{"title": "x"}'),
    ("POST", THING, {**GOOD, "content-type": "application/merge-patch+json"}, b"{}"),
    ("POST", THING, {**GOOD, "content-type": "Application/JSON; charset=utf-8"}, b"{}"),
    ("POST", THING, {**GOOD, "content-type": "json"}, b"{}"),
    ("POST", THING, {**GOOD, "content-type": "application/xml"}, b"{}"),
    ("POST", THING, {**GOOD, "content-type": "application/json"}, b"\xff\xfe"),
    ("GET", "/things", GOOD, None),
    ("GET", "/things?owner=bob&limit=3&tag=a&tag=b", GOOD, None),
    ("GET", "/things?owner=toolongname&limit=30", GOOD, None),
    ("GET", "/things?limit=", GOOD, None),
    ("GET", "/things", {}, None),
    ("GET", THING + "/raw", GOOD, None),
    ("GET", THING + "/raw", {}, None),
    ("POST", "/things/5/accepted", GOOD, None),
    ("POST", "/things/five/accepted", GOOD, None),
    ("PUT", "/things/5", GOOD, None),
    ("PUT", "/things/5", {**GOOD, "X-Exists": "yes"}, None),
    ("DELETE", "/things/5", GOOD, None),
    ("PATCH", "/things/5", GOOD, {"a": 1}),
    ("PATCH", "/things/5", GOOD, None),
    ("PATCH", "/things/5", GOOD, [1, 2]),
]


async def answer(
    app: FastAPI, method: str, path: str, headers: dict[str, str], body: Any
) -> tuple[int, dict[str, str], bytes]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://dealflow.test",
    ) as client:
        if isinstance(body, bytes):
            got = await client.request(method, path, headers=headers, content=body)
        elif body is None:
            got = await client.request(method, path, headers=headers)
        else:
            got = await client.request(method, path, headers=headers, json=body)
    return got.status_code, dict(got.headers), got.content


@pytest.fixture
def apps() -> tuple[tuple[FastAPI, dict[str, int]], tuple[FastAPI, dict[str, int]]]:
    return served(lean=False), served(lean=True)


@pytest.mark.parametrize(("method", "path", "headers", "body"), REQUESTS)
async def test_a_planned_route_answers_as_fastapi_does(
    apps: tuple[tuple[FastAPI, dict[str, int]], tuple[FastAPI, dict[str, int]]],
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
) -> None:
    (fastapis, fastapi_calls), (lean, lean_calls) = apps
    expected = await answer(fastapis, method, path, headers, body)
    got = await answer(lean, method, path, headers, body)
    assert got == expected
    assert lean_calls == fastapi_calls  # the dependency cache: each dependency ran as often


async def test_a_response_that_breaks_its_model_fails_as_with_fastapi() -> None:
    """The same error, naming the same endpoint (file, line, function, route)."""
    raised = []
    for lean in (False, True):
        app, _ = served(lean)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dealflow.test"
        ) as client:
            with pytest.raises(ResponseValidationError) as error:
                await client.get("/things/1/wrong", headers=GOOD)
        raised.append((str(error.value), error.value.endpoint_ctx))
    assert raised[0] == raised[1]
    context = raised[1][1]
    assert context is not None
    assert context["path"] == "GET /things/{thing_id}/wrong"


def test_every_route_of_the_table_is_planned() -> None:
    """Else the table above compares FastAPI with itself."""
    app, _ = served(lean=True)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) == 8
    assert [f"{r.methods} {r.path}" for r in routes if not getattr(r, LEAN, False)] == []


def test_what_needs_fastapis_own_handler_keeps_it() -> None:
    app = FastAPI()

    async def session() -> AsyncIterator[str]:
        yield "a session"

    def sync_dependency() -> str:
        return "sync"

    @app.get("/with-yield")
    async def with_yield(value: Annotated[str, Depends(session)]) -> str:
        return value

    @app.get("/sync-dependency")
    async def uses_sync(value: Annotated[str, Depends(sync_dependency)]) -> str:
        return value

    @app.get("/sync-endpoint")
    def sync_endpoint() -> str:
        return "sync"

    lean_routes(app)
    planned = {getattr(r, "path", None) for r in app.routes if getattr(r, LEAN, False)}
    assert not planned & {"/with-yield", "/sync-dependency", "/sync-endpoint"}


async def test_overridden_dependencies_are_solved_by_fastapi() -> None:
    """Routes added by the app itself see its overrides (the platform's routers' routes,
    added to the app's table as they are, have no provider of overrides, with either
    handler)."""
    app = FastAPI()

    async def who() -> str:
        return "the caller"

    @app.get("/who")
    async def answer_who(name: Annotated[str, Depends(who)]) -> str:
        return name

    async def someone_else() -> str:
        return "overridden"

    lean_routes(app)
    assert all(getattr(r, LEAN, False) for r in app.routes if getattr(r, "path", "") == "/who")
    assert (await answer(app, "GET", "/who", {}, None))[2] == b'"the caller"'
    app.dependency_overrides[who] = someone_else
    assert (await answer(app, "GET", "/who", {}, None))[2] == b'"overridden"'
