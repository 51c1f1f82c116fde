"""Opaque cursors, ETags and `If-Match` for the list and update endpoints."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any

import orjson
from fastapi import Header

from dealflow_common.http.problems import Problem, field_errors

IfMatch = Annotated[
    str | None,
    Header(
        description='An ETag from an earlier response (`"3"`), or `*`; the change is '
        "refused (412) if stale, and a value that is no ETag is invalid (422)",
        pattern=r'^(\*|(W/)?"[0-9]{1,18}")$',
    ),
]

_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(position, dict):
            raise ValueError
        return position
    except ValueError:
        raise Problem(
            422,
            "validation",
            "Invalid request",
            "cursor: not a cursor this API returned",
            errors=field_errors("cursor", "not a cursor this API returned"),
        ) from None


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version an `If-Match` header asks for; None when absent or `*`."""
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if not match:
        raise Problem(
            412,
            "stale-version",
            "Precondition failed",
            f"If-Match {if_match!r} is not an ETag this API returned",
        )
    return int(match.group(1))
