"""What every request must fit before any service code sees it.

One pure ASGI middleware, in front of every service's routes:

- request line and headers together at most `max_header_bytes` (431): a 1.4 MB bearer
  token is refused here, before it is parsed, verified or cached;
- a body at most `max_body_bytes` (413): refused from its `Content-Length` when it says
  so, otherwise counted as it streams in and refused the moment it is over, so a 10 MB
  body is never read whole;
- no NUL character (`\\u0000`) in the path, the query string or a JSON body (422 naming
  the field): PostgreSQL cannot store it, SQLite stores it, and `q=%00` matched every
  row. A JSON body is scanned for the escape only; it is parsed here only to name the
  field of a body that is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dealflow_common.http.problems import Problem, problem_response

NUL_MESSAGE = "must not contain the NUL character (\\u0000)"

# `\u0000` in JSON text is a NUL only when its backslash is not itself escaped: an even
# number of backslashes (none included) before it.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refuse_head(scope)
        if refused is not None:
            await _answer(refused, scope, receive, send)
            return
        declared, streamed = _body_framing(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _answer(self._too_large(), scope, receive, send)
            return
        if declared == 0 or (declared is None and not streamed):
            # No body (HTTP/1.1 frames one only by Content-Length or chunked encoding).
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _answer(self._too_large(), scope, receive, send)
                return
        if b"\x00" in body or _JSON_NUL.search(body):
            problem = _invalid([(field, NUL_MESSAGE) for field in _nul_fields(bytes(body))])
            await _answer(problem, scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _refuse_head(self, scope: Scope) -> Problem | None:
        query: bytes = scope.get("query_string", b"")
        size = len(scope.get("raw_path") or scope["path"]) + len(query)
        size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self.max_header_bytes:
            return Problem(
                431,
                "headers-too-large",
                "Request header fields too large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )
        if "\x00" in scope["path"]:
            return _invalid([("path", NUL_MESSAGE)])
        if b"%00" in query or b"\x00" in query:
            names = [
                name if "\x00" not in name else "query"
                for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                if "\x00" in name or "\x00" in value
            ]
            return _invalid([(name, NUL_MESSAGE) for name in dict.fromkeys(names or ["query"])])
        return None

    def _too_large(self) -> Problem:
        return Problem(
            413,
            "body-too-large",
            "Content too large",
            f"the request body exceeds {self.max_body_bytes} bytes",
        )


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length if sent, whether the body is chunked)."""
    declared = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def _invalid(errors: list[tuple[str, str]]) -> Problem:
    return Problem(
        422,
        "validation",
        "Invalid request",
        "; ".join(f"{field}: {message}" for field, message in errors[:5]),
        errors=[{"field": field, "message": message} for field, message in errors],
    )


def _nul_fields(body: bytes) -> list[str]:
    """The fields of a JSON body holding a NUL, named as validation errors name them."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ["body"]
    found = list(dict.fromkeys(_paths_with_nul(document, "")))
    return found or ["body"]


def _paths_with_nul(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield path or "body"
                continue
            yield from _paths_with_nul(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_with_nul(item, f"{path}[{index}]")


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, read already, as the app would have received it; then the client's."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(problem, Request(scope, receive))
    await response(scope, receive, send)
