"""The limits every request must fit (RequestLimits), the per-caller rate limit, and the
field types whose schema states what their validation enforces."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import pytest
from pydantic import BaseModel, Field, ValidationError

from dealflow_common.http.fields import (
    BLANK_PATTERN,
    WHITESPACE,
    WHOLE_NUMBER,
    Text,
)
from dealflow_common.http.limits import RequestLimits
from dealflow_common.http.ratelimit import RateLimiter


class Downstream:
    """The app behind the middleware: records the body it received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(
    chunks: list[bytes],
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    method: str = "POST",
    path: str = "/things",
    max_body: int = 1_024,
    max_header: int = 1_024,
) -> tuple[int, dict[str, Any] | None, Downstream, int]:
    """(status, problem body, the app, how many chunks the middleware read)."""
    app = Downstream()
    limits = RequestLimits(app, max_header_bytes=max_header, max_body_bytes=max_body)
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers if headers is not None else [(b"transfer-encoding", b"chunked")],
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    await limits(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    problem = orjson.loads(body) if status != 200 else None
    return status, problem, app, read


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    status, _, app, _ = await call([b'{"a": ', b'"b"}'])
    assert status == 200
    assert app.bodies == [b'{"a": "b"}']


async def test_a_declared_content_length_over_the_limit_is_refused_unread() -> None:
    status, problem, app, read = await call(
        [b"x" * 1_000] * 10_000, headers=[(b"content-length", b"10000000")]
    )
    assert (status, read, app.bodies) == (413, 0, [])
    assert problem is not None
    assert problem["type"] == "urn:dealflow:problem:body-too-large"


async def test_a_streamed_body_is_refused_as_soon_as_it_is_over_the_limit() -> None:
    status, problem, app, read = await call([b"x" * 500] * 10_000)
    assert status == 413
    assert read == 3  # 1,500 bytes > 1,024: the other 9,997 chunks were never read
    assert app.bodies == []
    assert problem is not None
    assert "1024" in problem["detail"]


async def test_headers_over_the_limit_are_refused_431() -> None:
    token = b"Bearer " + b"e" * 2_000
    status, problem, app, _ = await call([b"{}"], headers=[(b"authorization", token)])
    assert status == 431
    assert problem is not None
    assert problem["type"] == "urn:dealflow:problem:headers-too-large"
    assert app.bodies == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b'{"title": "a\\u0000b"}', ["title"]),
        (b'{"lines": [{"x": "ok"}, {"x": "\\u0000"}]}', ["lines[1].x"]),
        (b'{"a": {"b\\u0000": 1}}', ["a"]),
        (b'{"t": "\\\\\\u0000"}', ["t"]),  # an escaped backslash, then a NUL
        (b'["\\u0000"]', ["[0]"]),
        (b'{"t": "\\u0000", "broken', ["body"]),
    ],
)
async def test_a_nul_in_a_json_body_is_refused_naming_its_field(
    body: bytes, fields: list[str]
) -> None:
    status, problem, app, _ = await call([body])
    assert status == 422
    assert problem is not None
    assert [e["field"] for e in problem["errors"]] == fields
    assert app.bodies == []


async def test_an_escaped_backslash_followed_by_u0000_is_no_nul() -> None:
    status, _, app, _ = await call([b'{"path": "C:\\\\u0000"}'])
    assert status == 200
    assert app.bodies == [b'{"path": "C:\\\\u0000"}']


@pytest.mark.parametrize(
    ("query", "fields"),
    [(b"q=%00", ["q"]), (b"limit=5&owner=a%00b&q=%00", ["owner", "q"]), (b"%00=1", ["query"])],
)
async def test_a_nul_in_the_query_string_is_refused_naming_the_parameter(
    query: bytes, fields: list[str]
) -> None:
    status, problem, _, _ = await call([], headers=[], query=query, method="GET")
    assert status == 422
    assert problem is not None
    assert [e["field"] for e in problem["errors"]] == fields


async def test_a_nul_in_the_path_is_refused() -> None:
    status, problem, _, _ = await call([], headers=[], method="GET", path="/links/a\x00b")
    assert status == 422
    assert problem is not None
    assert problem["errors"][0]["field"] == "path"


# --- the rate limit ------------------------------------------------------------------


def test_a_caller_may_burst_then_waits_for_the_average_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(per_second=2, burst=3, clock=lambda: now[0])
    assert [limiter.retry_after("alice") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("alice") == pytest.approx(0.5)
    assert limiter.retry_after("bob") == 0  # per caller
    now[0] += 0.5
    assert limiter.retry_after("alice") == 0
    assert limiter.retry_after("alice") > 0


def test_a_refused_request_does_not_count() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=1, burst=1, clock=lambda: now[0])
    assert limiter.retry_after("alice") == 0
    for _ in range(100):
        assert limiter.retry_after("alice") > 0
    now[0] += 1.0
    assert limiter.retry_after("alice") == 0


def test_buckets_are_bounded_in_number() -> None:
    limiter = RateLimiter(per_second=1, burst=1, clock=lambda: 0.0, max_callers=10)
    for i in range(1_000):
        limiter.retry_after(f"caller-{i}")
    assert len(limiter._buckets) == 10


# --- fields whose schema says what they enforce --------------------------------------


class Body(BaseModel):
    title: Annotated[str, Text(10)]
    probability: Annotated[int, Field(ge=0, le=100, strict=True), WHOLE_NUMBER] = 0


def test_text_states_its_rules_in_the_schema() -> None:
    schema = Body.model_json_schema()["properties"]["title"]
    assert schema == {
        "maxLength": 10,
        "minLength": 1,
        "not": {"pattern": BLANK_PATTERN},
        "title": "Title",
        "type": "string",
    }


@pytest.mark.parametrize("blank", [" ", "\t\n\r", "\u00a0", "\u3000\u2009", "\ufeff"])
def test_text_refuses_whitespace_alone_as_its_pattern_does(blank: str) -> None:
    import re

    assert re.search(BLANK_PATTERN, blank)
    with pytest.raises(ValidationError, match="only whitespace"):
        Body(title=blank)


@pytest.mark.parametrize("kept", ["\x1c", "\x85", "a", " a "])
def test_text_accepts_what_its_pattern_accepts(kept: str) -> None:
    import re

    assert not re.search(BLANK_PATTERN, kept)
    assert Body(title=kept).title == kept.strip(WHITESPACE)


def test_text_counts_the_length_as_sent_and_refuses_nul() -> None:
    with pytest.raises(ValidationError, match="at most 10"):
        Body(title=" " * 10 + "x")
    with pytest.raises(ValidationError, match="NUL"):
        Body(title="a\x00")


def test_a_whole_number_float_is_an_integer_and_nothing_else_is() -> None:
    assert Body(title="t", probability=88.0).probability == 88
    schema = Body.model_json_schema()["properties"]["probability"]
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 0, 100)
    for wrong in (88.5, "88", True, None):
        with pytest.raises(ValidationError):
            Body(title="t", probability=wrong)
