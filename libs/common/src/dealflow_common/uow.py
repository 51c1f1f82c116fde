"""The unit of work: one database transaction whose recorded events reach the outbox.

A use case loads aggregates through the repositories of a unit of work, lets them
record events, and commits. The events are written to the outbox in that same
transaction, so a state change and the events it causes are stored together or not
at all; the relay publishes them afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from dealflow_common import one_write
from dealflow_common.context import FlowContext, current_flow
from dealflow_common.contracts.base import EventPayload
from dealflow_common.errors import DomainError
from dealflow_common.last_write import LastWrite
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.one_write import StaleCopy
from dealflow_common.pool import give_back, kept_at_once, take_kept, take_kept_at_once
from dealflow_common.telemetry import current_trace_headers


class RecordsEvents(Protocol):
    """An aggregate: it records the events its commands cause, in `events`."""

    events: list[EventPayload]


_committed: ContextVar[bool] = ContextVar("dealflow_work_committed", default=False)


def work_committed() -> bool:
    """Whether a unit of work committed within the current `work_scope` (a request): a
    request that stored a change and then failed must not be told nothing changed."""
    return _committed.get()


class work_scope:  # noqa: N801 - used as a function: `with work_scope():`
    """One request's scope for `work_committed`, whatever task runs it (a class, as
    `context.flow` is, for the same reason)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _committed.set(False)

    def __exit__(self, *exc: object) -> None:
        _committed.reset(self._token)


class CommitOutcomeUnknown(Exception):
    """The connection to the database was lost while it committed: the change may or
    may not be stored. Lost before the commit, the transaction is rolled back and nothing
    is stored (a 503, safe to retry); lost during it, only a read can tell (a 500)."""


class UnitOfWork:
    def __init__(self, engine: AsyncEngine, outbox: Outbox, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._outbox = outbox
        self.clock = clock
        self._connection: AsyncConnection | None = None
        self._events: list[tuple[EventPayload, FlowContext]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._before_commit: list[Callable[[], Awaitable[None]]] = []
        self._done = False
        self._one_write_asked = False
        self._one_write = False
        self._copies_served: list[Callable[[], None]] = []

    def one_write(self, asked: bool = True) -> Self:
        """Run the next `async with` in one-write mode (`one_write`): reads unlocked, no
        transaction unless something but the last write writes. For a use case that ends
        with `commit(last)`; `asked=False` runs it as usual."""
        self._one_write_asked = asked
        return self

    @property
    def connection(self) -> AsyncConnection:
        if self._connection is None:
            raise RuntimeError("the unit of work is used outside `async with`")
        return self._connection

    async def __aenter__(self) -> Self:
        engine = self._engine.sync_engine
        sync = take_kept_at_once(engine)
        if sync is None:
            sync = await greenlet_spawn(_connect, engine)
        else:
            # A connection kept on PostgreSQL, where SQLAlchemy's asyncpg adapter sends
            # BEGIN with the first statement: beginning waits for nothing, so it needs no
            # hop into SQLAlchemy's greenlet (a third of what was left of a work's
            # bookkeeping, with the commit's).
            try:
                sync.begin()
            except BaseException:
                await greenlet_spawn(sync.close)
                raise
        connection = AsyncConnection(self._engine, sync)
        self._connection = connection
        self._events = []
        self._after_commit = []
        self._before_commit = []
        self._copies_served = []
        self._done = False
        asked, self._one_write_asked = self._one_write_asked, False
        self._one_write = asked and one_write.start(connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection = self.connection
        self._connection = None
        sync = connection.sync_connection
        if sync is not None:  # else `commit` released it
            connection.sync_connection = None
            await greenlet_spawn(_close, sync, not self._done, self._one_write)
        if self._copies_served and not self._done and isinstance(exc, DomainError):
            # Decided on a copy, the refusal may be the copy's, not the row's.
            for refused in self._copies_served:
                refused()
            raise StaleCopy(str(exc)) from exc

    def served_copy(self, refused: Callable[[], None]) -> None:
        """A repository answered a read with a copy of what this process wrote last
        (`recent`). If the work is refused before it commits (a business refusal, the
        versioned write's `StaleVersion` among them), `refused` forgets the copy and the
        refusal becomes `StaleCopy`: the use case runs again from a read
        (`once_then_locked`). A write whose own check of a copy fails (a gate) raises
        `StaleCopy` itself, after forgetting it. Another failure leaves the copy: it is
        still what this process last committed."""
        self._copies_served.append(refused)

    def record(self, *events: EventPayload) -> None:
        """Queue events for the outbox; they are written only if the work commits.

        Each event keeps the flow it was recorded in: a consumer applies events of
        many flows in one transaction, and each result belongs to its own flow; and
        the span it was recorded in, so that its trace goes on through Kafka.
        """
        flow = current_flow()
        trace_headers = current_trace_headers()
        if trace_headers is not None:
            flow = dataclasses.replace(flow, trace=trace_headers)
        self._events.extend((event, flow) for event in events)

    def collect(self, aggregate: RecordsEvents) -> None:
        """Take the events an aggregate recorded (it records, the unit of work publishes)."""
        self.record(*aggregate.events)
        aggregate.events.clear()

    @property
    def recorded(self) -> tuple[EventPayload, ...]:
        return tuple(event for event, _ in self._events)

    async def commit(self, last: LastWrite | None = None) -> None:
        """Commit; `last`: the work's last write, which a repository left for the commit
        to send with the outbox rows, in one statement on PostgreSQL (`last_write`).

        The connection is given back with the commit (kept for the next work, or back
        to the pool: `pool`): nothing reads or writes through the work after it (its
        connection refuses to), and a second commit is refused."""
        if self._done:
            raise RuntimeError("the unit of work is already committed or rolled back")
        connection = self.connection
        for write in self._before_commit:
            await write()
        if self._events:
            # The outbox append (with the last write, if any) is one statement: in
            # one-write mode with nothing written before it, it commits by itself.
            alone = self._one_write and one_write.last_write(connection)
            try:
                await self._outbox.append(connection, self._events, self.clock(), last)
            except sa_exc.DBAPIError as error:
                if alone and error.connection_invalidated:
                    raise CommitOutcomeUnknown(str(error.orig)) from error
                raise
        elif last is not None:
            await last.alone(connection)
        sync = connection.sync_connection
        assert sync is not None, "a work's connection is open"
        # The work is over once committed: the connection is given back in the same
        # hop into SQLAlchemy's synchronous side, committed or not, and the work's
        # `AsyncConnection` lets go of it (a later use raises rather than reach a
        # connection another work may hold by then).
        connection.sync_connection = None
        try:
            if kept_at_once(sync):
                # Nothing to send (a one-write work whose last write committed by
                # itself) and the connection stays checked out: no hop either.
                after_commit = _commit(sync, self._one_write)
            else:
                after_commit = await greenlet_spawn(_commit, sync, self._one_write)
        except sa_exc.DBAPIError as error:
            if error.connection_invalidated:
                raise CommitOutcomeUnknown(str(error.orig)) from error
            raise
        self._done = True
        _committed.set(True)
        if self._events:
            self._outbox.notify_committed()
        for callback in self._after_commit:
            callback()
        if after_commit is not None:
            raise after_commit

    def before_commit(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run `write` in the transaction when it commits, before the outbox rows: where
        a repository writes back what it held (`HeldRows`)."""
        self._before_commit.append(write)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the work is committed (not if it rolls back)."""
        self._after_commit.append(callback)

    async def rollback(self) -> None:
        await self.connection.rollback()
        self._done = True


# A work's connection is opened, committed and closed through SQLAlchemy's synchronous
# `Connection`, one hop into it (`greenlet_spawn`) each, rather than through
# `AsyncConnection`, whose `connect`, `begin`, `commit` and `close` are a hop each with
# their own bookkeeping: 130 against 77 µs of CPU for a work's connection, measured
# alone, and a service runs a work for every request that changes something and every
# batch of events.


def _connect(engine: Engine) -> Connection:
    """A connection an earlier work kept (`pool`), or a pooled one, its transaction
    begun."""
    connection = take_kept(engine) or engine.connect()
    try:
        # On SQLite this is `BEGIN IMMEDIATE`, which fails once the busy timeout runs
        # out; the work is not entered then, so the connection is given back here.
        connection.begin()
    except BaseException:
        connection.close()
        raise
    return connection


def _commit(connection: Connection, in_one_write: bool) -> BaseException | None:
    """Commit, and give the connection back whatever the outcome (`_close`).

    A commit that fails is rolled back before the close: SQLAlchemy keeps the failed
    transaction on the connection, and the pool would take it back without resetting it
    (on SQLite, with `BEGIN IMMEDIATE` still holding the write lock). What interrupts the
    close after a commit that succeeded (a cancellation, on SQLite, where giving the
    connection back awaits) is returned, not raised: the work is committed, and says so
    before it raises that."""
    try:
        connection.commit()
    except BaseException:
        with contextlib.suppress(Exception):  # the commit's own error is the one to raise
            _close(connection, True, in_one_write)
        raise
    try:
        _close(connection, False, in_one_write)
    except BaseException as error:
        return error
    return None


def _close(connection: Connection, rollback: bool, in_one_write: bool) -> None:
    """End the work's use of its connection: kept for the next work (`pool.give_back`)
    only if nothing failed on the way, closed otherwise."""
    clean = False
    try:
        if rollback:
            connection.rollback()
        clean = True
    finally:
        if in_one_write:
            one_write.end(connection)
        give_back(connection, clean)
