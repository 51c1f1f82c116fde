"""Routing that tries only the routes a path could match, in the table's order.

Starlette's router tries its routes one by one, in order, until one matches: a stage
move (`POST /opportunities/{id}/stage`) was tried against 15 routes, each a call into
FastAPI's and Starlette's `matches` and a regular expression, about 3 % of the
request's Python. Reordering the table would cut that but can change which route
answers (`/opportunities/search` before or after `/opportunities/{id}`).

`route_by_shape` keeps the table and its order and only skips routes that cannot match.
A route's path is a sequence of segments, each a literal or holding a parameter; none of
Starlette's parameter types but `path` matches a `/`, so a path of another number of
segments, or with another literal in a literal segment, cannot match it. Routes are
indexed by their number of segments, their first segment and their last; a request
tries, in the table's order, only the routes whose shape fits its path, plus every
route the index cannot describe (a `path` parameter, a mount, a host, a websocket). If
one of those matches, fully or by path only (a 405), FastAPI's router handles the
request over just those routes, with the same outcome as over the whole table, since
the routes skipped answer `NONE`. If none does, the whole table handles it as before:
a 404, the redirect to the path with or without its trailing slash, the low-priority
routes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path  # what `Route.matches` matches against
from starlette.convertors import FloatConvertor, IntegerConvertor, StringConvertor, UUIDConvertor
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from dealflow_common.http.lean import LEAN, with_file_stack

_ANY = object()
"""A request's segment that no route of its length names as a literal: only a
parameter's segment can take it, so every such segment (an id) has the same routes."""

Key = tuple[int, object, object]

_ONE_SEGMENT = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)
"""Starlette's convertors whose pattern matches within one segment (`path` spans
several; one registered by an app may too)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What a route's path requires: its number of segments, and its first and last
    segments when they are literals (None: a parameter's segment, which takes any)."""

    segments: int
    first: str | None
    last: str | None

    def fits(self, key: Key) -> bool:
        segments, first, last = key
        return (
            self.segments == segments
            and (self.first is None or self.first == first)
            and (self.last is None or self.last == last)
        )


def shape_of(route: BaseRoute) -> Shape | None:
    """The route's shape, or None when it cannot be told from its path: not a `Route`
    (a mount, a host, an included router, a websocket), or a `path` parameter, which
    spans segments. `APIRoute` matches as `Route` does, by its compiled path."""
    if not isinstance(route, Route) or not route.path.startswith("/"):
        return None
    if not all(type(c) in _ONE_SEGMENT for c in route.param_convertors.values()):
        return None  # `path`, or a convertor of one's own whose pattern may take a `/`
    segments = route.path[1:].split("/")
    first, last = segments[0], segments[-1]
    return Shape(
        segments=len(segments),
        first=None if "{" in first else first,
        last=None if "{" in last else last,
    )


class RouteIndex:
    """The routes a request's path could match, in the table's order, by its shape."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        self._shapes = [shape_of(route) for route in self.routes]
        self._firsts: dict[int, set[str]] = {}
        self._lasts: dict[int, set[str]] = {}
        self._lengths = {shape.segments for shape in self._shapes if shape is not None}
        for shape in self._shapes:
            if shape is not None and shape.first is not None:
                self._firsts.setdefault(shape.segments, set()).add(shape.first)
            if shape is not None and shape.last is not None:
                self._lasts.setdefault(shape.segments, set()).add(shape.last)

    def key(self, path: str) -> Key:
        """The path's shape as the index tells shapes apart: a path `/…` of N segments.
        Every length no route has is one shape (0), so that the shapes are bounded
        whatever paths are asked for."""
        segments = path[1:].split("/")
        count, first, last = len(segments), segments[0], segments[-1]
        if count not in self._lengths:
            return (0, _ANY, _ANY)
        return (
            count,
            first if first in self._firsts.get(count, ()) else _ANY,
            last if last in self._lasts.get(count, ()) else _ANY,
        )

    def candidates(self, key: Key) -> list[BaseRoute]:
        """The routes a path of that shape could match (and every route `shape_of`
        cannot describe), in the table's order."""
        return [
            route
            for route, shape in zip(self.routes, self._shapes, strict=True)
            if shape is None or shape.fits(key)
        ]


class ShapeRouting:
    """The router's entry point: the routes a request's path could match, tried first."""

    def __init__(self, router: Any) -> None:
        self._router = router
        self._index = RouteIndex(router.routes)
        # Per shape: a copy of the router whose table is the candidates only (same
        # settings, same low-priority routes), or None where nothing is skipped. Shapes
        # are bounded: a segment no route names is `_ANY`, a length no route has is one.
        self._narrowed: dict[Key, Any] = {}
        self.file_stack = False
        """Whether a request handed to FastAPI's router gets the exit stack FastAPI's own
        handlers close uploaded files with (`fastapi_middleware_astack`), as the app's
        `AsyncExitStackMiddleware` gave every request before `without_idle_layers` took
        that layer out: a planned route, called directly, takes no files."""

    def _narrowed_for(self, path: str) -> Any:
        routes = self._router.routes
        index = self._index
        if len(index.routes) != len(routes) or (routes and index.routes[-1] is not routes[-1]):
            # Routes added or removed after startup (a test, a late router): index them
            # again. A route replaced in place, the table's length and last route
            # unchanged, is not seen: the services never change a table once serving.
            index = self._index = RouteIndex(routes)
            self._narrowed = {}
        key = index.key(path)
        try:
            return self._narrowed[key]
        except KeyError:
            pass
        candidates = index.candidates(key)
        narrowed = None
        if len(candidates) < len(index.routes):
            narrowed = copy.copy(self._router)
            narrowed.routes = candidates
        self._narrowed[key] = narrowed
        return narrowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self._router
        path = get_route_path(scope) if scope["type"] == "http" else ""
        narrowed = self._narrowed_for(path) if path.startswith("/") else None
        if narrowed is None:
            await self._fastapis(router.app, scope, receive, send)
            return
        matched = False
        for route in narrowed.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                if _served_directly(route, child_scope, scope, router):
                    # What FastAPI's router and the route's `handle` would do before
                    # calling its app: the method is the route's (a FULL match), there
                    # are no form limits or route contexts to apply, and the telemetry
                    # FastAPI would name the route for is off.
                    if "router" not in scope:
                        scope["router"] = router
                    scope.update(child_scope)
                    await route.app(scope, receive, send)
                    return
                matched = True
                break
            matched = matched or match is not Match.NONE
        if not matched:
            # No route matches: the whole table decides (the 404, the redirect to the
            # path with or without its trailing slash, the low-priority routes).
            await self._fastapis(router.app, scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = router  # `url_for` finds any route of the table
        await self._fastapis(narrowed.app, scope, receive, send)

    async def _fastapis(self, app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's router serves the request, with the file stack if it is ours to give."""
        if self.file_stack:
            await with_file_stack(app, scope, receive, send)
        else:
            await app(scope, receive, send)


def _served_directly(route: BaseRoute, child_scope: Scope, scope: Scope, router: Any) -> bool:
    """Whether a fully matched route's app may be called without FastAPI's router and
    the route's `handle` in between: a route served by a planned handler (`http.lean`),
    under a router with no form limits, outside FastAPI's own telemetry, with no route
    context of FastAPI's in its match (an included router's)."""
    return (
        getattr(route, LEAN, False)
        and not getattr(router, "form_limits", None)
        and "fastapi.telemetry" not in scope
        and "fastapi" not in child_scope
    )


def route_by_shape(app: FastAPI) -> None:
    """Route `app`'s requests by their path's shape. Only a router with no middleware of
    its own, whose entry point is its `app`, which this wraps."""
    router = app.router
    if router.middleware_stack == router.app:
        router.middleware_stack = ShapeRouting(router)
