"""Transactional outbox: write events with the state change, publish them afterwards.

`Outbox.append` runs inside the business transaction: it gives each event the next
`sequence` of its subject and stores the whole CloudEvents envelope. `OutboxRelay`
publishes unsent rows in id order and stamps them sent.

Why it is built this way:
- The relay selects *unsent* rows, never "ids above the last one sent": ids are taken
  when a row is inserted, but transactions commit in any order, so a lower id can
  appear after a higher one was already published.
- One relay publishes at a time per database (a PostgreSQL session advisory lock held
  on a connection of its own), so records of one opportunity are sent in the order they
  were committed even with several replicas; the lock goes with its connection, so a
  replica that dies hands over at once.
- No database transaction, row lock or SQLite writer lock is held while the relay waits
  on Kafka: it reads the rows, sends them with a bounded wait, then stamps what was
  acked in a short transaction of its own. A stalled broker therefore stops publishing,
  not writing: requests go on filling the outbox, and the relay catches up after.
- A subject's rows are marked sent only up to its first failed send: a later record of
  that subject is sent again after the failed one, so a subscriber may see a
  duplicate (it dedupes on the envelope id) but never a missing event.
- A producer timeout does not prove the record was not written, so nothing is marked
  sent without an acknowledgement; the price is an occasional duplicate.
- Each record also carries its CloudEvents attributes as headers (`ce_type`, `ce_id`,
  ...), so a consumer can skip a type it does not handle without parsing the value.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Insert,
    Select,
    Text,
    Uuid,
    all_,
    any_,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.selectable import CTE

from dealflow_common.context import FlowContext
from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.envelope import CONTENT_TYPE
from dealflow_common.db import is_postgres, reading
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.tables import event_sequence, inbox, outbox
from dealflow_common.metrics import LoopCounter
from dealflow_common.telemetry import end_publish_span, start_publish_span, tracing_enabled

if TYPE_CHECKING:
    from dealflow_common.last_write import LastWrite

log = logging.getLogger(__name__)

# pg_try_advisory_lock key for "the outbox relay of this schema" (search_path
# scopes the tables, not the lock, so the key includes a hash of the schema name).
_RELAY_LOCK_BASE = 0x0D_EA_1F_10


class Outbox:
    """Writes events to the outbox table inside the caller's transaction."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._committed = asyncio.Event()

    async def append(
        self,
        connection: AsyncConnection,
        events: Sequence[tuple[EventPayload, FlowContext]],
        now: datetime,
        after: LastWrite | None = None,
    ) -> None:
        """Write `events` to the outbox; `after`: the unit of work's last write, sent in
        the same statement on PostgreSQL (`last_write`)."""
        rows: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for event, flow in events:
            event_id = uuid.uuid4()
            subject = event.subject  # made from the deal's id on each use: taken once
            counts[subject] = counts.get(subject, 0) + 1
            envelope = {
                "specversion": "1.0",
                "id": str(event_id),
                "source": self.source,
                "type": event.event_type,
                "subject": subject,
                "time": now.isoformat(),
                "datacontenttype": "application/json",
                "dataschema": event.dataschema(),
                "data": event.model_dump(mode="json"),
                "correlationid": flow.correlation_id,
                "causationid": flow.causation_id,
            }
            if flow.trace:
                envelope.update(flow.trace)  # the CloudEvents distributed tracing extension
            rows.append(
                {
                    "event_id": event_id,
                    "topic": event.topic,
                    "subject": subject,
                    # The event's place among this work's events of its subject; its
                    # `sequence` is the subject's last one before the work, plus this.
                    "nth": counts[subject],
                    "event_type": event.event_type,
                    "correlation_id": flow.correlation_id,
                    # Without `sequence`: it is appended when allocated (`_numbered`).
                    "envelope": orjson.dumps(envelope).decode(),
                    "created_at": now,
                }
            )
        if is_postgres(connection):
            # Allocate the sequences and insert the rows in one statement.
            one = len(rows) == 1
            params: dict[str, Any] = {"created_at": now}
            if one:
                params.update(
                    (ONE_EVENT_PREFIX + name, rows[0][name])
                    for _, name, _ in _EVENT_COLUMNS
                    if name != "nth"
                )
            else:
                params.update((names, [r[name] for r in rows]) for names, name, _ in _EVENT_COLUMNS)
            if after is None:
                await _APPENDED[one].rowcount(connection, params)
                return
            appended = after.with_outbox.appending(one)
            if await appended.rowcount(connection, {**after.params, **params}) == 0:
                await after.refused(connection)  # the write did not happen: nor did these
            return
        if after is not None:
            await after.alone(connection)
        first = await _allocate_sequences(connection, counts)
        for row in rows:
            row["sequence"] = first[row["subject"]] + row.pop("nth") - 1
            row["envelope"] = _numbered(row["envelope"], row["sequence"])
        await connection.execute(_INSERT_OUTBOX, rows)

    def notify_committed(self) -> None:
        """Wake the relay of this process: new rows are committed."""
        self._committed.set()

    async def wait_for_commit(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._committed.wait(), at_most)
        self._committed.clear()


async def _allocate_sequences(
    connection: AsyncConnection, counts: dict[str, int]
) -> dict[str, int]:
    """Reserve `counts[subject]` sequence numbers per subject; returns the first of each.

    One upsert for all subjects, in subject order so that two transactions touching
    the same subjects take their row locks in the same order and cannot deadlock.
    """
    result = await connection.execute(
        _sequence_upsert(connection.dialect.name),
        [{"subject": s, "last_sequence": n} for s, n in sorted(counts.items())],
    )
    return {subject: last - counts[subject] + 1 for subject, last in result.all()}


def _numbered(envelope: str, sequence: int) -> str:
    """The envelope's JSON with its `sequence` as the last attribute (as `appended_after`
    writes it on PostgreSQL)."""
    return f'{envelope[:-1]},"sequence":{sequence}}}'


_EVENT_COLUMNS = (
    ("event_ids", "event_id", Uuid),
    ("topics", "topic", Text),
    ("subjects", "subject", Text),
    ("nths", "nth", BigInteger),
    ("event_types", "event_type", Text),
    ("correlation_ids", "correlation_id", Text),
    ("envelopes", "envelope", Text),
)
"""The outbox append's parameters, one array each (`appended_after`), and the column each
fills."""

ONE_EVENT_PREFIX = "outbox_"
"""An append of one event binds its column values as they are, each named the column
with this prefix (`outbox_subject`), apart from the write's own parameters."""


def appended_after(gate: CTE | None = None, *companions: CTE, one: bool = False) -> Insert:
    """PostgreSQL: the sequence upsert (in subject order, as `_allocate_sequences`) and the
    outbox insert as one statement, each row numbered from what the upsert returned and
    inserted in the order the events were recorded (the relay publishes in id order).

    With a `gate` (a writing CTE that returns the written row's id) the rows are numbered
    and inserted only if it returned one: the last write of a unit of work and its events
    go together or not at all (`last_write`). `companions`: CTEs of that write that nothing
    selects from (its lines, its history entry), run in the same statement.

    `one`: the statement for one event (every request's append), its values bound as
    they are (`ONE_EVENT_PREFIX`) rather than as arrays of one: asyncpg checks each array
    and each item against `collections.abc`'s classes (about 30 checks for the seven
    arrays of one event, each a call into `abc`), and the database unnests, counts and
    sorts nothing.
    """
    if one:

        def value(name: str, type_: Any) -> Any:
            return bindparam(ONE_EVENT_PREFIX + name, type_=type_)

        subject = value("subject", Text)
        counting = select(subject.label("subject"), literal(1, BigInteger).label("n"))
        events: Any = select(
            *(
                (literal(1, BigInteger) if name == "nth" else value(name, type_)).label(name)
                for _, name, type_ in _EVENT_COLUMNS
            ),
            literal(1, BigInteger).label("position"),
        ).subquery("e")
    else:
        subjects = (
            func.unnest(bindparam("subjects", type_=postgresql.ARRAY(Text)))
            .table_valued(column("subject", Text))
            .render_derived(name="s")
        )
        counting = select(subjects.c.subject, func.count().label("n")).group_by(subjects.c.subject)
        events = (
            func.unnest(
                *(bindparam(name, type_=postgresql.ARRAY(t)) for name, _, t in _EVENT_COLUMNS)
            )
            .table_valued(*(column(c, t) for _, c, t in _EVENT_COLUMNS), with_ordinality="position")
            .render_derived(name="e")
        )
    if gate is not None:
        counting = counting.where(exists(select(gate.c[0])))
    counts = counting.cte("counts")
    upsert = postgresql.insert(event_sequence).from_select(
        ["subject", "last_sequence"],
        select(counts.c.subject, counts.c.n).order_by(counts.c.subject),
    )
    allocated = (
        upsert.on_conflict_do_update(
            index_elements=[event_sequence.c.subject],
            set_={"last_sequence": event_sequence.c.last_sequence + upsert.excluded.last_sequence},
        )
        .returning(event_sequence.c.subject, event_sequence.c.last_sequence)
        .cte("allocated")
    )
    sequence = allocated.c.last_sequence - counts.c.n + events.c.nth
    # The envelope's JSON with its `sequence` as the last attribute (`_numbered`).
    envelope = (
        func.left(events.c.envelope, -1, type_=Text)
        + literal(',"sequence":', Text)
        + cast(sequence, Text)
        + literal("}", Text)
    )
    rows = (
        select(
            events.c.event_id,
            events.c.topic,
            events.c.subject,
            sequence,
            events.c.event_type,
            events.c.correlation_id,
            envelope,
            bindparam("created_at", type_=outbox.c.created_at.type),
        )
        .select_from(
            events.join(counts, counts.c.subject == events.c.subject).join(
                allocated, allocated.c.subject == events.c.subject
            )
        )
        .order_by(events.c.position)
    )
    appended = insert(outbox).from_select(
        [
            "event_id",
            "topic",
            "subject",
            "sequence",
            "event_type",
            "correlation_id",
            "envelope",
            "created_at",
        ],
        rows,
    )
    for companion in companions:
        appended = appended.add_cte(companion)
    return appended


_APPENDED = {one: DirectStatement(appended_after(one=one)) for one in (False, True)}
"""The append with no write before it in its statement: of several events, of one."""

_INSERT_OUTBOX = outbox.insert()


@functools.cache
def _sequence_upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = insert(event_sequence)
    return values.on_conflict_do_update(
        index_elements=[event_sequence.c.subject],
        set_={"last_sequence": event_sequence.c.last_sequence + values.excluded.last_sequence},
    ).returning(
        event_sequence.c.subject, event_sequence.c.last_sequence, sort_by_parameter_order=True
    )


class RelayIncomplete(Exception):
    """The broker did not ack every record of a batch; the rest will be sent again."""

    def __init__(self, unsent: int) -> None:
        super().__init__(f"{unsent} outbox rows were not acked; they will be sent again")


class RecordSender(Protocol):
    """Queues one record; the returned future resolves when the broker acked it."""

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]: ...


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = LoopCounter(
            "dealflow_outbox_published",
            "Events published from the outbox",
            ["topic"],
            registry=registry,
        )
        self.batches = LoopCounter(
            "dealflow_outbox_relay_batches",
            "Reads of unsent outbox rows that found some: published per batch is the ratio",
            registry=registry,
        )
        self.failures = Counter(
            "dealflow_outbox_publish_failures",
            "Outbox records the broker did not ack",
            registry=registry,
        )
        self.backlog = Gauge(
            "dealflow_outbox_backlog", "Outbox rows not yet published", registry=registry
        )
        self.oldest_unsent_age = Gauge(
            "dealflow_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unpublished outbox row",
            registry=registry,
        )
        self._published_on: dict[str, Any] = {}

    def count_published(self, topic: str) -> None:
        """One event published on `topic` (one of the few this service publishes): its
        child of the counter found once, not through `labels()` for every event."""
        counted = self._published_on.get(topic)
        if counted is None:
            counted = self._published_on[topic] = self.published.labels(topic)
        counted.inc()


class _RelayLeadership:
    """Which replica relays a schema's outbox: the holder of a PostgreSQL session lock.

    The lock lives on a connection of its own in autocommit mode, so holding it keeps
    no transaction open (nothing for `idle_in_transaction_session_timeout` to kill, no
    row locked). The connection is checked at most once a second; when it is gone, the
    lock went with it and another replica may have taken over.

    The relay reads and stamps its rows on this connection too, with sequential scans
    off for this session alone. Its statement is prepared once and soon runs on a
    generic plan, made from the table as it was then: made on a new, empty outbox, that
    plan stamps by reading the whole table, and keeps doing so as the table grows (4 to
    5 ms a round at 20,000 rows, against about 0.1 ms through the primary key). Both of
    the relay's reads have an index made for them, so an index is always the plan.
    Planning every round instead (`plan_cache_mode`) cost 0.74 ms a round
    (docs/performance.md, issue 13's thirty-first round).

    The session's commits, which are only the relay's stamps, do not wait for their WAL
    flush (`synchronous_commit = off`): a stamp lost in a database crash only sends its
    row again, which every inbox skips. It saves the stamp its flush, about half of its
    round trip (docs/performance.md, issue 13's thirty-second round). Every other
    session, and so every business write and its outbox row, keeps the synchronous
    commit.
    """

    def __init__(self, engine: AsyncEngine, key: int) -> None:
        self._engine = engine
        self._key = key
        self._connection: AsyncConnection | None = None
        self._checked_at = 0.0

    async def held(self) -> bool:
        if self._connection is not None:
            if time.monotonic() - self._checked_at < 1.0:
                return True
            try:
                await self._connection.execute(select(1))
                self._checked_at = time.monotonic()
                return True
            except Exception:
                log.warning("outbox relay lost its lock connection; taking the lock again")
                await self.release()
        connection = await self._engine.connect()
        try:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if await connection.scalar(select(func.pg_try_advisory_lock(self._key))):
                await connection.exec_driver_sql("SET enable_seqscan = off")
                await connection.exec_driver_sql("SET synchronous_commit = off")
                self._connection = connection
                self._checked_at = time.monotonic()
                return True
        except BaseException:
            await _end_session(connection)  # it may hold the lock or some of its settings
            raise
        await connection.close()
        return False

    @property
    def connection(self) -> AsyncConnection:
        """The lock's connection, for the relay's own statements (after `held`)."""
        assert self._connection is not None, "the lock is not held"
        return self._connection

    def answered(self) -> None:
        """A statement on the connection succeeded: it needs no check for a second."""
        self._checked_at = time.monotonic()

    def failed(self) -> None:
        """A statement on the connection failed: check it before it is used again."""
        self._checked_at = 0.0

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await _end_session(connection)


async def _end_session(connection: AsyncConnection) -> None:
    """Close the lock's connection for good, not back into the pool: its session ends,
    and with it the lock and the session's settings. Pooled, it would go on holding the
    lock, and serve business writes that commit without waiting for their flush."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


class OutboxRelay:
    """Publishes committed outbox rows to Kafka and stamps them sent."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox_writer: Outbox,
        send: RecordSender,
        *,
        schema_name: str,
        clock: Callable[[], datetime],
        batch_size: int,
        poll_interval: float,
        publish_timeout: float,
        outbox_retention: timedelta,
        inbox_retention: timedelta,
        metrics: RelayMetrics,
    ) -> None:
        self._engine = engine
        self._outbox = outbox_writer
        self._send = send
        self._leadership = (
            _RelayLeadership(engine, _RELAY_LOCK_BASE ^ (hash_name(schema_name) & 0x7FFFFFFF))
            if is_postgres(engine)
            else None
        )
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._outbox_retention = outbox_retention
        self._inbox_retention = inbox_retention
        self._metrics = metrics
        self._last_cleanup: datetime | None = None
        self._last_gauges: datetime | None = None
        self._acked_unstamped: list[int] = []
        """Rows published and acked, not stamped yet: on PostgreSQL the next read of
        unsent rows stamps them in the same statement (or `release` does)."""
        self.publishing = True
        """False while the broker does not ack what the relay sends (for readiness)."""

    async def run(self, ready: Callable[[], Awaitable[object]]) -> None:
        """Relay until cancelled; `ready` returns once the broker is connected."""
        await ready()
        backoff = self._poll_interval
        try:
            while True:
                failed = False
                try:
                    sent = await self.relay_once()
                    backoff = self._poll_interval
                    self.publishing = True
                except asyncio.CancelledError:
                    raise
                except RelayIncomplete as incomplete:
                    log.warning("%s", incomplete)
                    failed = True
                    self.publishing = False
                except Exception:
                    # The database is away, most likely; nothing is lost, rows stay unsent.
                    log.exception("outbox relay failed; retrying")
                    failed = True
                # The backlog gauges matter most while publishing fails: refresh them anyway.
                await self._maybe_clean_up()
                if failed:
                    backoff = min(backoff * 2, 10.0)
                    await asyncio.sleep(backoff)
                elif sent < self._batch_size:
                    await self._outbox.wait_for_commit(self._poll_interval)
        finally:
            await asyncio.shield(self.release())

    async def release(self) -> None:
        """Stop being this schema's publisher, so another replica's relay takes over;
        what was acked is stamped sent first, so that it does not publish it again."""
        if self._acked_unstamped:
            try:
                async with self._engine.connect() as connection:
                    await self._stamp(connection, self._acked_unstamped)
                self._acked_unstamped = []
            except Exception:  # the next publisher sends them again: duplicates, no loss
                log.warning("could not stamp %d acked outbox rows", len(self._acked_unstamped))
        if self._leadership is not None:
            await self._leadership.release()

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were marked sent.

        Raises `RelayIncomplete` after stamping what was acked, when the broker did not
        ack some records within the publish timeout.
        """
        if self._leadership is not None:
            if not await self._leadership.held():
                return 0
            # One statement stamps what the last batch sent and reads the next: in
            # autocommit, a transaction of its own, without BEGIN and COMMIT, on the
            # lock's connection (`_RelayLeadership`).
            try:
                rows = await _stamp_and_select_unsent(self._batch_size).all(
                    self._leadership.connection,
                    {"b_ids": self._acked_unstamped, "b_sent_at": self._clock()},
                )
            except BaseException:
                self._leadership.failed()
                raise
            self._leadership.answered()
            self._acked_unstamped = []
        else:
            async with reading(self._engine) as connection:
                rows = await _select_unsent(self._batch_size).all(connection, {})
                await connection.rollback()
        if not rows:
            return 0
        self._metrics.batches.inc()
        results = await self._publish(rows)
        sent_ids: list[int] = []
        held_back: set[str] = set()
        for row, error in zip(rows, results, strict=True):
            if error is not None:
                log.warning("broker did not ack outbox row %s: %r", row.id, error)
                self._metrics.failures.inc()
                held_back.add(row.subject)
            elif row.subject not in held_back:
                sent_ids.append(row.id)
                self._metrics.count_published(row.topic)
        if sent_ids and self._leadership is not None:
            # A stamp lost with this process costs duplicates the inboxes absorb, and
            # waiting for the next read saves a round trip per batch.
            self._acked_unstamped = sent_ids
        elif sent_ids:
            async with self._engine.connect() as connection:
                await self._stamp(connection, sent_ids)
        if held_back:
            raise RelayIncomplete(len(rows) - len(sent_ids))
        return len(sent_ids)

    async def _stamp(self, connection: AsyncConnection, ids: list[int]) -> None:
        if is_postgres(connection):
            # One statement is a transaction of its own: on PostgreSQL it runs in
            # autocommit, without the BEGIN and COMMIT round trips.
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await _stamp_sent(connection.dialect.name).rowcount(
            connection, {"b_ids": ids, "b_sent_at": self._clock()}
        )
        await connection.commit()

    async def _publish(self, rows: Sequence[Any]) -> list[BaseException | None]:
        """Send every row, waiting at most the publish timeout; None where acked."""
        results: list[BaseException | None] = [
            TimeoutError("no acknowledgement within the publish timeout")
        ] * len(rows)

        spans: list[Any] = []

        async def send_all() -> None:
            acks = []
            for row in rows:
                headers = {
                    "content-type": CONTENT_TYPE,
                    "ce_specversion": "1.0",
                    "ce_id": str(row.event_id),
                    "ce_type": row.event_type,
                    "ce_source": self._outbox.source,
                    "ce_subject": row.subject,
                }
                if tracing_enabled():
                    span, trace_headers = start_publish_span(
                        row.topic,
                        row.subject,
                        str(row.event_id),
                        row.event_type,
                        _creation_trace(row.envelope),
                    )
                    spans.append(span)
                    headers.update(trace_headers)
                ack = await self._send(
                    row.topic, row.subject.encode(), row.envelope.encode(), headers
                )
                # Read an ack that arrives after we stopped waiting, so that asyncio
                # does not report it as never retrieved.
                ack.add_done_callback(_retrieve)
                acks.append(ack)
            for index, ack in enumerate(acks):
                try:
                    await ack
                    results[index] = None
                except Exception as error:
                    results[index] = error

        try:
            async with asyncio.timeout(self._publish_timeout):
                await send_all()
        except Exception as error:
            # A timeout, or the producer refused a record (not connected, metadata
            # unavailable): what was not acked stays unsent and is sent again.
            log.warning("publishing stopped: %r", error)
        for span, result in zip(spans, results, strict=False):
            end_publish_span(span, result)
        return results

    async def backlog(self) -> tuple[int, datetime | None]:
        async with self._engine.connect() as connection:
            count, oldest = (
                await connection.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                )
            ).one()
        return int(count), oldest

    async def _maybe_clean_up(self) -> None:
        """Every 5 s refresh the backlog gauges (the dashboards plot them); once a minute
        forget old published rows and inbox ids."""
        now = self._clock()
        if self._last_gauges is None or now - self._last_gauges >= timedelta(seconds=5):
            self._last_gauges = now
            try:
                count, oldest = await self.backlog()
                self._metrics.backlog.set(count)
                self._metrics.oldest_unsent_age.set((now - oldest).total_seconds() if oldest else 0)
            except Exception:
                log.warning("reading the outbox backlog failed", exc_info=True)
        if self._last_cleanup and now - self._last_cleanup < timedelta(minutes=1):
            return
        self._last_cleanup = now
        try:
            await self._clean_up(now)
        except Exception:
            log.warning("outbox housekeeping failed; trying again in a minute", exc_info=True)

    async def _clean_up(self, now: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(outbox).where(outbox.c.sent_at < now - self._outbox_retention)
            )
            await connection.execute(
                delete(inbox).where(inbox.c.applied_at < now - self._inbox_retention)
            )


def _unsent(limit: int) -> Select[Any]:
    return (
        select(
            outbox.c.id,
            outbox.c.event_id,
            outbox.c.event_type,
            outbox.c.topic,
            outbox.c.subject,
            outbox.c.envelope,
        )
        .where(outbox.c.sent_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
    )


@functools.cache
def _select_unsent(limit: int) -> DirectStatement:
    return DirectStatement(_unsent(limit))


@functools.cache
def _stamp_and_select_unsent(limit: int) -> DirectStatement:
    """PostgreSQL: stamp `b_ids` sent and read the unsent rows after them, in one
    statement. The update is a CTE, so the select sees the rows as they were before it:
    those it stamps are left out by their ids."""
    ids = bindparam("b_ids", type_=postgresql.ARRAY(BigInteger))
    stamped = (
        update(outbox)
        .where(outbox.c.id == any_(ids))
        .values(sent_at=bindparam("b_sent_at"))
        .cte("stamped")
    )
    return DirectStatement(_unsent(limit).where(outbox.c.id != all_(ids)).add_cte(stamped))


@functools.cache
def _stamp_sent(dialect: str) -> DirectStatement:
    """Stamp rows sent. On PostgreSQL the ids travel as one array, so the statement's
    text is the same whatever their number and stays prepared (an `IN` list of each
    length was a statement of its own, prepared again and again)."""
    ids = bindparam("b_ids", type_=postgresql.ARRAY(BigInteger))
    matching = (
        outbox.c.id == any_(ids)
        if dialect == "postgresql"
        else outbox.c.id.in_(bindparam("b_ids", expanding=True))
    )
    return DirectStatement(update(outbox).where(matching).values(sent_at=bindparam("b_sent_at")))


def _creation_trace(envelope: str) -> dict[str, str] | None:
    """The trace context the outbox stored in the envelope (only read with tracing on)."""
    try:
        attributes = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        return None
    parent = attributes.get("traceparent")
    if not isinstance(parent, str):
        return None
    state = attributes.get("tracestate")
    return {"traceparent": parent, **({"tracestate": state} if isinstance(state, str) else {})}


def _retrieve(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled():
        ack.exception()


def hash_name(name: str) -> int:
    """A stable (not per-process salted) hash, for lock keys shared between replicas."""
    value = 0
    for char in name.encode():
        value = (value * 131 + char) & 0xFFFFFFFF
    return value
