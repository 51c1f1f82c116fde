"""Opaque cursors, ETags and `If-Match` for the list and update endpoints."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import Header

from dealflow_common.http.problems import Problem, invalid_field

IfMatch = Annotated[
    str | None,
    Header(
        description='An ETag from an earlier response (`"3"`), or `*`; the change is '
        "refused (412) if stale, and a value that is no ETag is invalid (422)",
        pattern=r'^(\*|(W/)?"[0-9]{1,18}")$',
    ),
]

_NOT_A_CURSOR = "not a cursor this API returned"
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
        raise invalid_field("cursor", _NOT_A_CURSOR) from None


def encode_time_and_id(moment: datetime, id_: UUID) -> str:
    """The cursor of a list ordered by a moment, then an id (for ties)."""
    return encode_cursor({"t": moment.isoformat(), "i": str(id_)})


def decode_time_and_id(cursor: str) -> tuple[datetime, UUID]:
    """`encode_time_and_id`'s position back; 422 naming `cursor` for anything else."""
    position = decode_cursor(cursor)
    try:
        return datetime.fromisoformat(position["t"]), UUID(position["i"])
    except (KeyError, ValueError, TypeError):
        raise invalid_field("cursor", _NOT_A_CURSOR) from None


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
