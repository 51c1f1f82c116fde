"""The business flow a piece of work belongs to, carried across awaits.

An HTTP request or a consumed event sets it once at the edge; the unit of work stamps
every event it writes with it, and the log formatter prints it. So one correlation id
runs through every event of one flow, and each event names what caused it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowContext:
    correlation_id: str
    causation_id: str | None = None
    """The event id or request id that caused the work now running."""
    trace: Mapping[str, str] | None = None
    """`traceparent` / `tracestate` of the span an event was recorded in (telemetry.py)."""


_current: ContextVar[FlowContext | None] = ContextVar("dealflow_flow", default=None)


def current_flow() -> FlowContext:
    """The flow of the running work; outside any flow a fresh one is started."""
    flow = _current.get()
    if flow is None:
        flow = FlowContext(correlation_id=str(uuid.uuid4()))
        _current.set(flow)
    return flow


def peek_flow() -> FlowContext | None:
    return _current.get()


class flow:  # noqa: N801 - used as a function: `with flow(...) as ctx`
    """Run a block inside a flow; a missing correlation id starts a new flow.

    A class rather than a `@contextmanager` generator: every request and every event
    applied enters one, and the generator's machinery (its frame, the wrapper object,
    a `next` on entry and on exit) cost more than the call it wraps. An instance is
    entered once (`with flow(...)`), as the generator allowed."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, correlation_id: str | None, causation_id: str | None) -> None:
        self._ctx = FlowContext(correlation_id or str(uuid.uuid4()), causation_id)

    def __enter__(self) -> FlowContext:
        self._token = _current.set(self._ctx)
        return self._ctx

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
