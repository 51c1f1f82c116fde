"""The console's one origin for the services' public APIs: /api/<service>/<path>.

The browser never learns the services' addresses and needs no CORS. The caller's
bearer token is passed through unchanged, so every answer is exactly what that user may
see; the gateway decides nothing and keeps nothing. It never logs a header or a query.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from dealflow_common.http.problems import Problem

# Request headers the services read; everything else (cookies above all) stays here.
_FORWARDED_REQUEST = (
    "authorization",
    "content-type",
    "accept",
    "if-match",
    "if-none-match",
    "idempotency-key",
    "x-correlation-id",
    "traceparent",
)
# Response headers the app reads.
_FORWARDED_RESPONSE = (
    "content-type",
    "content-disposition",
    "etag",
    "location",
    "retry-after",
    "idempotent-replayed",
    "x-correlation-id",
)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
log = logging.getLogger(__name__)


def _too_large(limit: int) -> Problem:
    return Problem(413, "too-large", "Request too large", f"the request body is over {limit} bytes")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes without holding more of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def gateway_routes(
    client: httpx.AsyncClient, upstreams: Mapping[str, str], max_body_bytes: int
) -> APIRouter:
    router = APIRouter(tags=["gateway"])

    @router.api_route(
        "/api/{service}/{path:path}",
        methods=_METHODS,
        summary="Forward a call to a service's public API with the caller's token",
    )
    async def forward(service: str, path: str, request: Request) -> Response:
        base = upstreams.get(service)
        if base is None:
            raise Problem(
                404,
                "not-found",
                "Not found",
                f"no service {service!r} behind this console; known: {', '.join(upstreams)}",
            )
        headers = {
            name: value
            for name in _FORWARDED_REQUEST
            if (value := request.headers.get(name)) is not None
        }
        try:
            answer = await client.request(
                request.method,
                f"{base}/{path}",
                params=request.url.query,
                headers=headers,
                content=await _body(request, max_body_bytes),
            )
        except httpx.HTTPError as error:
            # The kind of failure only: the URL's query and the headers stay out of logs.
            log.warning("the %s service did not answer: %s", service, type(error).__name__)
            raise Problem(
                502,
                "upstream-unavailable",
                "Service unavailable",
                f"the {service} service did not answer; try again",
                headers={"Retry-After": "2"},
            ) from None
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            headers={
                name: value
                for name in _FORWARDED_RESPONSE
                if (value := answer.headers.get(name)) is not None
            },
        )

    return router
