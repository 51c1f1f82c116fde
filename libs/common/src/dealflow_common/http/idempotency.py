"""The `Idempotency-Key` request header and the `Idempotent-Replayed` answer
(`dealflow_common.idempotency` keeps the keys)."""

from __future__ import annotations

from typing import Any

from fastapi import Header, Response

from dealflow_common.idempotency import HEADER


def idempotency_key_header(description: str) -> Any:
    """The optional header, for a route parameter typed
    `Annotated[str | None, idempotency_key_header(...)]`; `description`: what it makes
    safe to retry."""
    return Header(alias=HEADER, min_length=1, max_length=200, description=description)


def answered_again(response: Response, replayed: bool) -> None:
    """Say when the answer is what an earlier request with the same key made."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
