"""A leaner request handler for the services' routes, with FastAPI's answers.

FastAPI's request handler works out again on every request what a route's signature
fixed at startup: for each parameter, whether it is a model, which aliases it has,
whether its type is a sequence; for each dependency, its cache key and whether it is a
coroutine; the content type, parsed as an e-mail header; two exit stacks for dependencies
with `yield`. Measured in-process with py-spy (`python -m bench.requests`), solving the
dependencies was 12 % of a request's CPU, and most of that was this bookkeeping, not
validation: request_params_to_args spent 22 of its 363 samples validating.

`lean_routes` gives each route whose signature it can plan a handler planned once: the
same steps in the same order, with the same validation (each field's own `validate`),
the same errors (the same `RequestValidationError` with the same locations, so the same
problem+json), the same dependency cache and the same response serialization
(FastAPI's `serialize_response`). A route it cannot plan keeps FastAPI's handler: a
dependency with `yield`, a sync endpoint or dependency, forms, streams, background
tasks, security scopes, websockets. So does every route while dependency overrides are
set, and every route when tracing is on (FastAPI's own spans come from its handler).

It plans with FastAPI's own helpers, some of them private (`fastapi._compat`, the
dependency utilities), at the version uv.lock pins. `test_lean_routes` serves one table
of routes with both handlers and compares every answer, so an upgrade of FastAPI that
changes what its handler answers fails there, not in production.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from copy import deepcopy
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI, params
from fastapi._compat import ModelField
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi._compat.v2 import get_missing_field_error
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import (
    Dependant,
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    request_params_to_args,
)
from fastapi.exceptions import HTTPException, RequestValidationError, ResponseValidationError
from fastapi.routing import APIRoute, _extract_endpoint_context, serialize_response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_SOURCES: tuple[tuple[str, str], ...] = (
    ("path_params", "path_params"),
    ("query_params", "query_params"),
    ("header_params", "headers"),
    ("cookie_params", "cookies"),
)
"""Each kind of parameter, and the request's attribute it is read from, in FastAPI's
order (errors are listed in it)."""


class _NotPlanned(Exception):
    """The route needs something only FastAPI's own handler does."""


@dataclass(frozen=True, slots=True)
class _Param:
    field: ModelField
    name: str
    alias: str
    loc: tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Params:
    """One kind of parameter: read field by field when each is a plain value under one
    name, else by FastAPI (`request_params_to_args`: models, sequences, alias choices)."""

    source: str
    plain: tuple[_Param, ...] | None
    fields: list[ModelField]

    def read(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        received: Mapping[str, Any] = getattr(request, self.source)
        if self.plain is None:
            found, wrong = request_params_to_args(self.fields, received)
            values.update(found)
            errors.extend(wrong)
            return
        kind_values: dict[str, Any] = {}  # what FastAPI's validators see as `values`
        for param in self.plain:
            value, wrong = _validated(
                param.field, received.get(param.alias), kind_values, param.loc
            )
            if wrong:
                errors.extend(wrong)
            else:
                kind_values[param.name] = value
        values.update(kind_values)


def _validated(
    field: ModelField, value: Any, values: dict[str, Any], loc: tuple[str, ...]
) -> tuple[Any, list[Any]]:
    """A parameter's value and errors, as FastAPI validates one (a value left out is
    missing when required, else its default)."""
    if value is None:
        if field.field_info.is_required():
            return None, [get_missing_field_error(loc=loc)]
        default = deepcopy(field.default)
        if not field.field_info.validate_default:
            return default, []
        value = default
    return field.validate(value, values, loc=loc)


@dataclass(frozen=True, slots=True)
class _Solver:
    """One dependant (the endpoint or a dependency): what it is given and how it is called."""

    call: Callable[..., Any]
    name: str | None
    cache_key: tuple[Any, ...]
    use_cache: bool
    dependencies: tuple[_Solver, ...]
    params: tuple[_Params, ...]
    request_names: tuple[str, ...]
    response_name: str | None

    async def solve(
        self,
        request: Request,
        sub_response: Response,
        cache: dict[tuple[Any, ...], Any],
        values: dict[str, Any],
        errors: list[Any],
    ) -> None:
        """Fills `values` with what this dependant is called with, in FastAPI's order:
        its dependencies (each called unless its own values had errors), then its
        parameters. The body is the endpoint's, read by the handler."""
        for dependency in self.dependencies:
            if dependency.use_cache and dependency.cache_key in cache:
                solved = cache[dependency.cache_key]
            else:
                given: dict[str, Any] = {}
                wrong: list[Any] = []
                await dependency.solve(request, sub_response, cache, given, wrong)
                if wrong:
                    errors.extend(wrong)
                    continue
                solved = await dependency.call(**given)
                cache.setdefault(dependency.cache_key, solved)
            if dependency.name is not None:
                values[dependency.name] = solved
        for kind in self.params:
            kind.read(request, values, errors)
        for name in self.request_names:
            values[name] = request
        if self.response_name is not None:
            values[self.response_name] = sub_response


def _solver(dependant: Dependant) -> _Solver:
    call = dependant.call
    if call is None or not _is_coroutine_callable(call):
        raise _NotPlanned("a sync call runs in FastAPI's thread pool")
    if _is_gen_callable(call) or _is_async_gen_callable(call):
        raise _NotPlanned("a dependency with yield needs FastAPI's exit stacks")
    if (
        dependant.websocket_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.parent_oauth_scopes
        or dependant.concurrency is not None
    ):
        raise _NotPlanned("websockets, background tasks, scopes and limits are FastAPI's")
    kinds = []
    for kind, source in _SOURCES:
        fields: list[ModelField] = getattr(dependant, kind)
        if fields:
            kinds.append(_Params(source, _plain(fields), fields))
    return _Solver(
        call=call,
        name=dependant.name,
        cache_key=(call, dependant.scope or ""),
        use_cache=dependant.use_cache,
        dependencies=tuple(_solver(d) for d in dependant.dependencies),
        params=tuple(kinds),
        request_names=tuple(
            n for n in (dependant.request_param_name, dependant.http_connection_param_name) if n
        ),
        response_name=dependant.response_param_name,
    )


def _plain(fields: Sequence[ModelField]) -> tuple[_Param, ...] | None:
    plain = []
    for field in fields:
        aliases = _get_param_aliases(field)
        if (
            _get_param_model(field) is not None
            or len(aliases) != 1
            or (
                field_annotation_is_sequence(field.field_info.annotation)
                and not _is_json_field(field)
            )
        ):
            return None
        info = field.field_info
        assert isinstance(info, params.Param)
        alias = aliases[0][1]
        plain.append(_Param(field, field.name, alias, (info.in_.value, alias)))
    return tuple(plain)


def _json_content(content_type: str | None, strict: bool) -> bool:
    """Whether FastAPI reads a body sent with this Content-Type as JSON: none given, when
    not strict; else application/json or application/*+json, as `email.message` parses
    the header (the part before `;`, lowercased, text/plain unless one `/`)."""
    if content_type is None:
        return not strict
    kind = content_type.partition(";")[0].strip().lower()
    if kind.count("/") != 1:
        return False
    main, sub = kind.split("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def plan_handler(route: APIRoute) -> Handler | None:
    """The route's planned handler, or None where FastAPI's own is needed."""
    body_field = route.body_field
    try:
        if body_field is not None and (
            len(route.dependant.body_params) != 1
            or route._embed_body_fields
            or isinstance(body_field.field_info, params.Form)
        ):
            raise _NotPlanned("forms and embedded bodies")
        if route.stream_item_field is not None or route.is_json_stream:
            raise _NotPlanned("streams")
        endpoint = _solver(route.dependant)
    except _NotPlanned:
        return None
    response_class = route.response_class
    actual_response_class: type[Response] = (
        response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    )
    strict = route.strict_content_type
    strict_content_type = strict.value if isinstance(strict, DefaultPlaceholder) else strict
    body_name = body_field.name if body_field is not None else None
    status_code = route.status_code
    response_field = route.response_field
    # FastAPI dumps straight to JSON bytes when no response class was chosen.
    dump_json = response_field is not None and isinstance(route.response_class, DefaultPlaceholder)
    serialized = partial(
        serialize_response,
        field=response_field,
        include=route.response_model_include,
        exclude=route.response_model_exclude,
        by_alias=route.response_model_by_alias,
        exclude_unset=route.response_model_exclude_unset,
        exclude_defaults=route.response_model_exclude_defaults,
        exclude_none=route.response_model_exclude_none,
        dump_json=dump_json,
    )
    call = route.dependant.call
    assert call is not None

    def context(request: Request) -> Any:
        found = dict(_extract_endpoint_context(call))
        mount_path = request.scope.get("root_path", "").rstrip("/")
        found["path"] = f"{request.method} {mount_path}{route.dependant.path}"
        return found

    async def handler(request: Request) -> Response:
        body: Any = PydanticUndefined
        if body_field is not None:
            body = await _body(request, strict_content_type, context)
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        values: dict[str, Any] = {}
        errors: list[Any] = []
        await endpoint.solve(request, sub_response, {}, values, errors)
        if body_field is not None:
            value, wrong = _validated_body(body_field, body)
            if wrong:
                errors.extend(wrong)
            else:
                values[body_name] = value  # type: ignore[index]
        if errors:
            raise RequestValidationError(
                errors,
                body=None if body is PydanticUndefined else body,
                endpoint_ctx=context(request),
            )
        raw = await call(**values)
        if isinstance(raw, Response):
            return raw
        # A status a dependency or the endpoint set on `response` wins over the route's.
        status = sub_response.status_code or status_code
        arguments: dict[str, Any] = {} if status is None else {"status_code": status}
        try:
            content = await serialized(response_content=raw)
        except ResponseValidationError as error:
            # The endpoint's context is worked out only for an answer that breaks its model.
            raise ResponseValidationError(
                error.errors(), body=error.body, endpoint_ctx=context(request)
            ) from None
        if dump_json:
            response = Response(content=content, media_type="application/json", **arguments)
        else:
            response = actual_response_class(content, **arguments)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    return handler


def _validated_body(field: ModelField, body: Any) -> tuple[Any, list[Any]]:
    """The body's value and errors, as FastAPI validates a single body model (with no
    other values beside it)."""
    loc = ("body",)
    if body is PydanticUndefined:
        if field.field_info.is_required():
            return None, [get_missing_field_error(loc=loc)]
        body = deepcopy(field.default)
        if not field.field_info.validate_default:
            return body, []
    return field.validate(body, {}, loc=loc)


async def _body(request: Request, strict: bool, context: Callable[[Request], Any]) -> Any:
    """The request's body as FastAPI hands it to validation: parsed JSON, the bytes when
    not JSON, undefined when empty; JSON that does not parse is a validation error."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        if _json_content(request.headers.get("content-type"), strict):
            return await request.json()
        return raw
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ],
            body=error.doc,
            endpoint_ctx=context(request),
        ) from error
    except HTTPException:
        raise
    except Exception as error:
        raise HTTPException(
            status_code=400, detail="There was an error parsing the body"
        ) from error


def _asgi(route: APIRoute, handler: Handler, fastapis: ASGIApp) -> ASGIApp:
    """The route's ASGI app: the planned handler inside Starlette's exception handling
    (FastAPI's `request_response` without the exit stacks, which only dependencies with
    yield and uploaded files use), or FastAPI's app while dependency overrides are set.

    The route's own exception handling stays, though the app's `ExceptionMiddleware`
    has the same handlers: a handler is given the request the route read (its body
    cached on it), and an exception a handler raises is handled once more outside."""
    overrides = route.dependency_overrides_provider

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if overrides is not None and getattr(overrides, "dependency_overrides", None):
            await with_file_stack(fastapis, scope, receive, send)
            return
        request = Request(scope, receive, send)

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(answer, request)(scope, receive, send)

    return app


FILE_STACK = "fastapi_middleware_astack"
"""Where FastAPI's own handlers find the exit stack they close uploaded files with."""


async def with_file_stack(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """`app` (FastAPI's), with the exit stack its handler requires, opened here unless
    the app's `AsyncExitStackMiddleware` opened it (routing by shape may call a planned
    route without it: `http.app.without_idle_layers`)."""
    if FILE_STACK in scope:
        await app(scope, receive, send)
        return
    async with AsyncExitStack() as stack:
        scope[FILE_STACK] = stack
        await app(scope, receive, send)


LEAN = "dealflow_lean"
"""Marks a route served by a planned handler (tests check the deal's routes are)."""


def lean_routes(app: FastAPI) -> None:
    """Serves every route of `app` that can be planned with its planned handler."""
    for route in app.router.routes:
        if not isinstance(route, APIRoute) or route.max_body_size is not None:
            continue  # a body limit of the route's own wraps FastAPI's app
        handler = plan_handler(route)
        if handler is not None:
            route.app = _asgi(route, handler, route.app)
            setattr(route, LEAN, True)
