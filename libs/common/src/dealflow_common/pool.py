"""Units of work keep their SQLAlchemy connections between works, in the pool's care
(PostgreSQL through asyncpg).

A unit of work took a connection from SQLAlchemy's pool and gave it back at its end:
a new `Connection` (its events joined to the engine's), the pool's checkout (its queue,
a fairy, a weak reference, the recycle check), then the checkin (the reset, the queue
again). Counted with callgrind, an empty work cost 250,000 instructions, about a seventh
of a stage move's, and every request and every batch of events runs one.

`KeepingPool` is SQLAlchemy's pool for asyncio with a list of connections whose work
ended cleanly: committed or rolled back, no transaction open, not invalidated, its
options and settings as a new connection's. The next work takes the last one kept
(`take_kept`) and needs none of that; a work that ended otherwise closes its connection
as before. Readers keep theirs the same way (`db.in_autocommit`); the relay reads on its
lock's connection, which never comes back to the pool (`outbox._RelayLeadership`). A
kept connection is still checked out of the pool, so the pool gives one back before it
would make anyone wait, and a work that ends while someone waits for a connection gives
its own back rather than keeping it: whoever needs a connection never waits for a kept
one. A kept connection older than the pool's recycle age, or older than the pool's last
invalidation (a database restart), is closed when taken, as the pool's checkout would
have replaced it. Disposing of the pool closes the kept ones first.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry


class KeepingPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool for asyncio, and the connections works and readers keep."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[Connection] = []
        self.waiting = 0
        """Checkouts under way, which may be waiting for a connection to come back:
        while there are any, a work's connection goes back to the pool, not kept."""

    def _do_get(self) -> ConnectionPoolEntry:
        # No connection idle and none left to open: one kept goes back first, rather
        # than anyone waiting while a work's connection sits unused.
        if self.kept and self._pool.empty() and self._overflow >= self._max_overflow:
            _return(self.kept.pop(0))
        self.waiting += 1
        try:
            return super()._do_get()
        finally:
            self.waiting -= 1

    def dispose(self) -> None:
        self.release_kept()
        super().dispose()

    def release_kept(self) -> None:
        """Give every kept connection back to the pool (until none is left: a work may
        end, and keep its connection, while one is given back)."""
        while self.kept:
            _return(self.kept.pop())


def take_kept(engine: Engine) -> Connection | None:
    """A connection a work or reader of `engine` kept, fit for another, if any."""
    pool = engine.pool
    if not isinstance(pool, KeepingPool):
        return None
    while pool.kept:
        connection = pool.kept.pop()
        if _fresh(connection, engine, pool):
            return connection
        _return(connection)
    return None


def take_kept_at_once(engine: Engine) -> Connection | None:
    """`take_kept` where nothing needs to wait: the last connection kept if it is fit,
    None if there is none or it must be closed first (which `take_kept` does, from
    SQLAlchemy's greenlet)."""
    pool = engine.pool
    if not isinstance(pool, KeepingPool) or not pool.kept:
        return None
    if not _fresh(pool.kept[-1], engine, pool):
        return None
    return pool.kept.pop()


def kept_at_once(connection: Connection) -> bool:
    """Whether the work on `connection` can end without waiting on anything: its driver
    has no transaction open (nothing to COMMIT), and the connection will be kept, not
    closed (`give_back`)."""
    adapted = _keepable_adapter(connection)
    return adapted is not None and adapted._transaction is None


def give_back(connection: Connection, clean: bool) -> None:
    """End a work's or a reader's use of `connection`: kept for the next one if its use
    ended `clean` (committed or rolled back), nothing is left open on it and it is as a
    new connection would be; else closed, back to the pool."""
    if clean and not connection.in_transaction():
        adapted = _keepable_adapter(connection)
        if adapted is not None and adapted._transaction is None and not adapted.autocommit:
            pool: Any = connection.engine.pool
            pool.kept.append(connection)
            return
    connection.close()


def _keepable_adapter(connection: Connection) -> Any | None:
    """SQLAlchemy's asyncpg adapter of `connection` if the connection may be kept once
    its use is over, else None: a `KeepingPool`'s own (not one disposed of meanwhile,
    whose connections go back to it), nobody waiting for a connection (it goes to them),
    open on both sides (`_open_adapter`), its options and the driver's settings
    untouched (the pool's checkin would reset them; a kept connection skips it)."""
    pool = connection.engine.pool
    if not isinstance(pool, KeepingPool) or pool.waiting:
        return None
    adapted = _open_adapter(connection)
    if adapted is None or connection._dbapi_connection._pool is not pool:  # type: ignore[union-attr]
        return None
    if connection._execution_options is not connection.engine._execution_options:
        return None  # `execution_options()` on the connection: an isolation level, ...
    if adapted._isolation_setting is not None or adapted.readonly or adapted.deferrable:
        return None
    return adapted


def _open_adapter(connection: Connection) -> Any | None:
    """SQLAlchemy's asyncpg adapter of `connection` if the connection is open, valid and
    its server side open (a terminated backend, a restart: the driver saw the socket
    close, which the pool's checkout cannot tell), else None. Read from SQLAlchemy's
    attributes rather than its properties, which would try to revalidate a connection
    closed or invalidated."""
    if connection.closed or connection.invalidated:
        return None
    fairy: Any = connection._dbapi_connection
    adapted: Any = fairy.dbapi_connection if fairy is not None else None
    if adapted is None or adapted._connection.is_closed():
        return None
    return adapted


def _return(connection: Connection) -> None:
    """Give a kept connection back to the pool; one the server closed meanwhile is
    invalidated first, so that the pool opens a new one in its place rather than hand
    it to someone."""
    if _open_adapter(connection) is None and not connection.closed:
        connection.invalidate()
    connection.close()


def _fresh(connection: Connection, engine: Engine, pool: KeepingPool) -> bool:
    """Whether a kept connection may serve `engine` now: open on both sides
    (`_open_adapter`), and what the pool's checkout checks of a connection: not older
    than the pool's last invalidation, nor than its recycle age."""
    if connection.engine is not engine or _open_adapter(connection) is None:
        return False
    record: Any = connection._dbapi_connection._connection_record  # type: ignore[union-attr]
    started: float = record.starttime
    if pool._invalidate_time > started or record._soft_invalidate_time > started:
        return False
    return not (pool._recycle > -1 and time.time() - started > pool._recycle)
