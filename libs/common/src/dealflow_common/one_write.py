"""A change that writes once needs no transaction: its write is one statement.

Most requests read an aggregate, apply a command and end with one statement that
writes the row and its events (`last_write`): its `WHERE version = ...` refuses it if
another writer got there first. Run inside a transaction, such a request cost two round
trips more (BEGIN and COMMIT) and a row lock taken by its read. In one-write mode
(`UnitOfWork.one_write`, PostgreSQL only) the work starts without a transaction: its
reads take no lock and its last write commits by itself, as one statement does.

What keeps it atomic: the first write sent before the last (an owner list, quote lines,
held projection rows) ends the mode on the spot, and the transaction begins with it, so
every write of the work commits together as before. A write is any statement that does
not start with `SELECT`; the rule is checked where statements leave, on SQLAlchemy's
`before_cursor_execute` and in `DirectStatement`, so a repository need not know.

What it changes: the version check, not a lock, now decides between two concurrent
changes of one row. The loser is refused with `StaleVersion`; a caller that named the
version it changed (If-Match) gets that answer, as it would have after the lock; a use
case without one runs again, locked (`once_then_locked`). A new row that depends on
another (a quote on its open deal) checks it in its insert (`with_lines`' gate); when the
check fails, the work raises `ReadChanged` and runs again, locked, to find out why.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.errors import StaleVersion

_in_one_write: weakref.WeakSet[Connection] = weakref.WeakSet()
"""Connections whose work has not written yet and holds no transaction. A set, not an
execution option: setting one costs SQLAlchemy's option machinery twice per work
(about 2 % of the quote service's CPU under the deal benchmark)."""

_guarded: weakref.WeakSet[Engine] = weakref.WeakSet()

T = TypeVar("T")


def _guard(engine: AsyncEngine) -> None:
    """Make a write sent through SQLAlchemy on `engine` begin the transaction of a work
    in one-write mode (once per engine, at its first such work)."""
    sync_engine = engine.sync_engine
    if sync_engine in _guarded:
        return
    _guarded.add(sync_engine)

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if connection in _in_one_write and writes(statement):
            begin_before_write(_adapter(connection))


def start(connection: AsyncConnection) -> bool:
    """Put a new work's connection in one-write mode; False where it cannot be (SQLite)."""
    if connection.dialect.name != "postgresql":
        return False
    _guard(connection.engine)
    # The driver adapter starts a transaction before a statement only when it is not in
    # autocommit; SQLAlchemy's own begin and commit then have nothing to send.
    sync = connection.sync_connection
    assert sync is not None, "a work's connection is open"
    _adapter(sync).autocommit = True
    _in_one_write.add(sync)
    return True


def last_write(connection: AsyncConnection) -> bool:
    """The work's last write follows: let it through as it is. True when it commits by
    itself (no earlier write began a transaction)."""
    sync = connection.sync_connection
    if sync is None or sync not in _in_one_write:
        return False
    _in_one_write.discard(sync)
    return bool(_adapter(sync).autocommit)


def end(sync: Connection) -> None:
    """Give the connection back to the pool as it came: in transactions. Called on
    SQLAlchemy's synchronous connection, where the work closes it."""
    _in_one_write.discard(sync)
    if sync.invalidated or sync.closed:
        return
    adapted = _adapter(sync)
    if adapted is not None:
        adapted.autocommit = False


def _adapter(sync: Connection) -> Any:
    """SQLAlchemy's asyncpg adapter of the connection (it holds the autocommit flag)."""
    return sync.connection.dbapi_connection


def is_one_write(connection: AsyncConnection) -> bool:
    """Whether the work reads without locking (its last write checks the version)."""
    sync = connection.sync_connection
    return sync is not None and in_one_write(sync)


def in_one_write(sync: Connection) -> bool:
    """`is_one_write` for SQLAlchemy's synchronous connection (`direct`)."""
    return sync in _in_one_write


def writes(sql: str) -> bool:
    """A statement that may write: anything but a `SELECT` (a `WITH` may hold a write).
    A function that writes, called from a `SELECT`, would pass unseen: the repositories'
    reads call none."""
    return sql.lstrip()[:6].upper() != "SELECT"


def begin_before_write(adapted: Any) -> None:
    """A write leaves before the last: the transaction begins with it (the adapter sends
    BEGIN before its next statement), so what follows commits with it."""
    if adapted.autocommit:
        adapted.autocommit = False


class ReadChanged(Exception):
    """What the work read unlocked changed before its last write, which stored nothing."""


class StaleCopy(ReadChanged):
    """A change decided on a copy of what this process wrote last (`recent`) was refused,
    by its versioned write or by a rule; the copy is forgotten. Run again from a read,
    which decides for good."""


async def once_then_locked(
    change: Callable[[bool], Awaitable[T]], expected_version: int | None
) -> T:
    """Run `change(True)`, unlocked in one-write mode; if another writer changed the row
    in between and the caller named no version (`expected_version`, from If-Match), run
    `change(False)`: in a transaction that locks what it reads, so it waits its turn
    instead of being refused again. The same when what it read changed (`ReadChanged`):
    locked, it sees the change and answers it as it would have had it come first.
    A refused copy (`StaleCopy`) runs once more unlocked first, reading this time."""
    try:
        try:
            return await change(True)
        except StaleCopy:
            # The copy is forgotten: this run reads, unlocked, as it would have at first.
            # Refused again, it runs locked (a `StaleCopy` is a `ReadChanged`).
            return await change(True)
    except StaleVersion:
        if expected_version is not None:
            raise
    except ReadChanged:
        pass
    return await change(False)
