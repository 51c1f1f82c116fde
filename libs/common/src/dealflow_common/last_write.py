"""A unit of work's last write, sent with its outbox rows as one statement.

Nearly every request ends the same way: one write (a stage move and its history entry,
a quote's versioned update, a new quote and its lines), then the outbox append, then
COMMIT. On PostgreSQL the write and the append are one statement: the write is a CTE
that returns the row's id, and the append numbers and inserts its rows only if that CTE
returned one (`messaging.outbox.appended_after`). A write that did not happen (a stale
version) therefore stores no event either, and `refused` then says why, as the write
alone would have. One round trip less per request.

A repository returns its last write (`save_at_commit`) instead of running it, and the
use case passes it to `UnitOfWork.commit(last)`. The row is not written before the
commit, so nothing may read it in between: only a use case whose write is its last
statement hands it over this way (a request's change; not a consumer's batch, whose
next event may read the row). Without events, or on SQLite (no writing CTE), the write
runs alone before the append, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import CTE

from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.outbox import appended_after

Refusal = Callable[[AsyncConnection], Awaitable[None]]
"""Raises why a last write stored nothing."""


@dataclass(frozen=True, slots=True)
class LastWrite:
    alone: Callable[[AsyncConnection], Awaitable[None]]
    """The write by itself (with its own refusal), when no outbox rows go with it."""
    with_outbox: WithOutbox
    """The write and the outbox append in one statement."""
    params: Mapping[str, Any]
    """The write's parameters in that statement (the append adds its own)."""
    refused: Refusal
    """Raises why the write did not happen, when the statement stored nothing."""


class WithOutbox:
    """The statements of one kind of write followed by the outbox append, of one event or
    of several (`appended_after`), each built at its first use (the outbox's statement is
    built from the write's CTEs) and kept."""

    def __init__(self, gate: CTE, *companions: CTE) -> None:
        self._gate = gate
        self._companions = companions
        self._statements: dict[bool, DirectStatement] = {}

    def appending(self, one: bool) -> DirectStatement:
        """The statement for an append of one event (`one`) or of several."""
        statement = self._statements.get(one)
        if statement is None:
            statement = self._statements[one] = DirectStatement(
                appended_after(self._gate, *self._companions, one=one)
            )
        return statement


async def never_refused(connection: AsyncConnection) -> None:
    """An insert cannot be skipped silently: it stores its row or raises."""
    raise RuntimeError("the row was neither inserted nor refused")
