"""Idempotent event consumers: apply each event once, then say which offsets are done.

A batch of records from Kafka is applied in one transaction: for each event its
envelope id is inserted into the inbox (an id already there is a duplicate and is
skipped), its handler runs, and the transaction commits. `apply_batch` then tells its
caller, per partition, the first record that is neither applied nor dead-lettered, so
that no offset is ever committed past it (at-least-once delivery, effectively-once
effect).

What cannot be applied, and what happens to it:
- A record that is not a CloudEvent of a known type (no value, bad JSON, a missing
  field, an unknown type or dataschema version, a CloudEvents header that is null or
  not UTF-8 or that disagrees with the envelope) goes to `<topic>.dlq` at once.
- A known type this consumer has no handler for is skipped, from its `ce_type` header
  without parsing the value when the producer set one.
- An event its handler would leave everything as it is, as the event alone tells
  (`changes_nothing`: a move between two open stages, for a service that only asks
  whether a deal is closed), is skipped too. Applying it twice changes nothing either,
  so it needs no inbox row, and a batch of only such events no transaction.
- When the batch fails, each event is retried alone so one bad event does not hold the
  others. After each failure the consumer asks the database whether it answers: if it
  does not, the failure is the world's, not the event's, and the event is retried until
  the database is back (it would be lost otherwise). If it does, the failure is the
  event's (or a conflict with a concurrent writer, which a retry resolves): it is
  retried `max_attempts` times and then dead-lettered.
- Dead-lettering itself is bounded. When the dead-letter topic cannot be written, that
  partition stops at the record (the caller pauses it and tries again later, loudly)
  rather than spinning or skipping it.

Handlers never see a record twice in one service: duplicates are skipped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from sqlalchemy import Uuid, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from dealflow_common.context import flow
from dealflow_common.contracts.base import EventPayload, is_known_event_type, payload_class
from dealflow_common.contracts.envelope import CloudEvent
from dealflow_common.contracts.topics import dead_letter_topic
from dealflow_common.db import is_postgres
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.tables import inbox
from dealflow_common.metrics import LoopCounter
from dealflow_common.telemetry import consume_span, record_trace_headers, tracing_enabled
from dealflow_common.uow import UnitOfWork

log = logging.getLogger(__name__)

P = TypeVar("P", bound=EventPayload)
U = TypeVar("U", bound=UnitOfWork)

# PostgreSQL SQLSTATEs that mean "try again": serialization failure, deadlock, lock
# not available (lock_timeout), query cancelled (statement_timeout).
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})

# CloudEvents attributes in Kafka headers (binary-mode names, set by our relay).
_CE_TYPE = "ce_type"
_CE_ID = "ce_id"


class Record(Protocol):
    """What the consumer reads of a Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


class PartitionKey(NamedTuple):
    topic: str
    partition: int


class DeadLetterUnavailable(Exception):
    """The dead-letter topic could not be written within the bounded attempts."""


@dataclass(frozen=True, slots=True)
class IncomingEvent(Generic[P]):
    envelope: CloudEvent
    payload: P


EventHandler = Callable[[Any, IncomingEvent[Any]], Awaitable[None]]
"""(unit of work, event) -> None; the handler records its own events on the unit of work."""

BatchPreparation = Callable[[Any, Sequence[IncomingEvent[Any]]], Awaitable[None]]
"""(unit of work, the batch's new events) -> None, before their handlers run: where a
service locks, in one statement, the projection rows its handlers would each lock with
one of their own (`ProjectionRows.lock_ahead`)."""

DeadLetterSender = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]
InfrastructureProbe = Callable[[], Awaitable[bool]]
"""Answers whether the database (what every handler needs) answers now."""
ChangesNothing = Callable[[Any], bool]
"""(validated payload) -> whether its handler would leave every row as it is, decided
from the event alone, so that any order of arrival and any repetition agree."""


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = LoopCounter(
            "dealflow_events_consumed",
            "Events consumed, by outcome: applied, duplicate, ignored, dead_lettered",
            ["group", "type", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "dealflow_consumer_retries",
            "Attempts to apply an event again after a failure",
            ["group", "kind"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Decoded:
    record: Record
    event: IncomingEvent[Any]
    handler: EventHandler
    headers: Mapping[str, str]


class EventConsumer(Generic[U]):
    def __init__(
        self,
        *,
        group_id: str,
        topics: Sequence[str],
        handlers: Mapping[str, EventHandler],
        unit_of_work: Callable[[], U],
        send_dead_letter: DeadLetterSender,
        clock: Callable[[], datetime],
        max_attempts: int,
        retry_backoff: float,
        metrics: ConsumerMetrics,
        infrastructure_answers: InfrastructureProbe,
        dead_letter_attempts: int = 3,
        before_batch: BatchPreparation | None = None,
        changes_nothing: ChangesNothing | None = None,
    ) -> None:
        self.group_id = group_id
        self.topics = tuple(topics)
        self._handlers = dict(handlers)
        self._unit_of_work = unit_of_work
        self._send_dead_letter = send_dead_letter
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff = retry_backoff
        self._metrics = metrics
        # The events counter's child of each (contract type, outcome) counted on every
        # record, found once: `labels()` validates and looks up its arguments per call.
        # Only types of the contract come here (dead letters, whose type may be any
        # string, are counted through `labels()`), so the map stays small.
        self._counted: dict[tuple[str, str], Any] = {}
        self._infrastructure_answers = infrastructure_answers
        self._dead_letter_attempts = dead_letter_attempts
        self._before_batch = before_batch
        self._changes_nothing = changes_nothing

    @property
    def handled_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    async def apply_batch(self, records: Sequence[Record]) -> dict[PartitionKey, int]:
        """Apply or dead-letter every record of a batch, in order per partition.

        Returns, for each partition that could not be finished, the offset of its first
        record that is neither applied nor dead-lettered; nothing at or after it in that
        partition was applied, so the caller must read it again from there. Partitions
        not in the answer are done.
        """
        not_done: dict[PartitionKey, int] = {}
        decoded: list[_Decoded] = []
        for record in records:
            where = PartitionKey(record.topic, record.partition)
            if where in not_done:
                continue
            try:
                item = await self._decode(record)
            except DeadLetterUnavailable:
                not_done[where] = record.offset
                continue
            if item is not None:
                decoded.append(item)
        if not decoded:
            return not_done
        try:
            await self._until_infrastructure_answers(lambda: self._apply(decoded))
            return not_done
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("batch of %d events failed; applying one by one", len(decoded))
        for item in decoded:
            where = PartitionKey(item.record.topic, item.record.partition)
            if where in not_done:
                continue
            try:
                await self._apply_alone(item)
            except DeadLetterUnavailable:
                not_done[where] = item.record.offset
        return not_done

    async def _decode(self, record: Record) -> _Decoded | None:
        headers, bad_header = _read_headers(record)
        if bad_header:
            await self._dead_letter(record, bad_header, None, "?")
            return None
        header_type = headers.get(_CE_TYPE)
        if header_type is not None and header_type not in self._handlers:
            await self._skip_unhandled(record, header_type)
            return None
        if record.value is None:
            await self._dead_letter(record, "record has no value", None, header_type or "?")
            return None
        try:
            envelope = CloudEvent.model_validate_json(record.value)
        except ValidationError as error:
            await self._dead_letter(record, "unreadable CloudEvents envelope", error, "?")
            return None
        if (header_type is not None and header_type != envelope.type) or (
            _CE_ID in headers and headers[_CE_ID] != str(envelope.id)
        ):
            await self._dead_letter(
                record, "CloudEvents headers disagree with the envelope", None, envelope.type
            )
            return None
        handler = self._handlers.get(envelope.type)
        if handler is None:
            await self._skip_unhandled(record, envelope.type)
            return None
        cls = payload_class(envelope.type, envelope.dataschema)
        if cls is None:
            await self._dead_letter(
                record, f"unsupported dataschema {envelope.dataschema}", None, envelope.type
            )
            return None
        try:
            # Fields this service does not know yet, at any depth, are ignored: adding
            # an optional field is not a breaking change (contracts/base.py).
            payload = cls.model_validate(envelope.data, extra="ignore")
        except ValidationError as error:
            await self._dead_letter(record, "data does not match its schema", error, envelope.type)
            return None
        if self._changes_nothing is not None and self._changes_nothing(payload):
            self._count(envelope.type, "ignored")
            return None
        return _Decoded(record, IncomingEvent(envelope, payload), handler, headers)

    async def _skip_unhandled(self, record: Record, event_type: str) -> None:
        """A type of the contract this consumer does not need is skipped; a type no
        contract defines is a producer's mistake, and is dead-lettered to be seen."""
        if is_known_event_type(event_type):
            self._count(event_type, "ignored")
            return
        await self._dead_letter(record, f"unknown event type {event_type[:100]!r}", None, "?")

    async def _apply(self, items: Sequence[_Decoded]) -> None:
        async with self._unit_of_work() as uow:
            outcomes = []
            fresh = await self._remember(uow, [item.event.envelope for item in items])
            if self._before_batch is not None and fresh:
                await self._before_batch(
                    uow, [item.event for item in items if item.event.envelope.id in fresh]
                )
            for item in items:
                envelope = item.event.envelope
                if envelope.id not in fresh:
                    outcomes.append((envelope.type, "duplicate"))
                    continue
                fresh.discard(envelope.id)  # the same event twice in one batch: once
                with flow(envelope.correlationid, str(envelope.id)), self._span(item):
                    await item.handler(uow, item.event)
                outcomes.append((envelope.type, "applied"))
            await uow.commit()
        for event_type, outcome in outcomes:
            self._count(event_type, outcome)

    def _count(self, event_type: str, outcome: str) -> None:
        """One event of a type of the contract, applied, a duplicate or ignored."""
        counted = self._counted.get((event_type, outcome))
        if counted is None:
            counted = self._counted[event_type, outcome] = self._metrics.events.labels(
                self.group_id, event_type, outcome
            )
        counted.inc()

    def _span(self, item: _Decoded) -> contextlib.AbstractContextManager[None]:
        """The trace span of applying one record; nothing is built with tracing off."""
        if not tracing_enabled():
            return contextlib.nullcontext()
        envelope = item.event.envelope
        return consume_span(
            self.group_id,
            item.record.topic,
            item.record.partition,
            item.record.offset,
            str(envelope.id),
            envelope.type,
            record_trace_headers(item.headers, _envelope_trace(envelope)),
        )

    async def _remember(self, uow: UnitOfWork, envelopes: Sequence[CloudEvent]) -> set[UUID]:
        """Insert the batch's event ids into the inbox, in one statement; returns the
        ids that were not there (the others were applied before)."""
        now = self._clock()
        if is_postgres(uow.connection):
            rows = await _REMEMBER_ON_POSTGRES.all(
                uow.connection,
                {
                    "consumer_group": self.group_id,
                    "event_ids": [envelope.id for envelope in envelopes],
                    "event_types": [envelope.type for envelope in envelopes],
                    "sources": [envelope.source for envelope in envelopes],
                    "subjects": [envelope.subject for envelope in envelopes],
                    "applied_at": now,
                },
            )
            return {row.event_id for row in rows}
        remembered = await uow.connection.execute(
            _inbox_insert(uow.connection.dialect.name),
            [
                {
                    "consumer_group": self.group_id,
                    "event_id": envelope.id,
                    "event_type": envelope.type,
                    "source": envelope.source,
                    "subject": envelope.subject,
                    "applied_at": now,
                }
                for envelope in envelopes
            ],
        )
        return set(remembered.scalars())

    async def _apply_alone(self, item: _Decoded) -> None:
        last_error: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._until_infrastructure_answers(lambda: self._apply([item]))
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                last_error = error
                log.warning(
                    "event %s (%s) failed, attempt %d of %d: %r",
                    item.event.envelope.id,
                    item.event.envelope.type,
                    attempt,
                    self._max_attempts,
                    error,
                )
                self._metrics.retries.labels(self.group_id, _failure_kind(error)).inc()
                await asyncio.sleep(self._backoff * attempt)
        await self._dead_letter(
            item.record,
            "handler failed",
            last_error,
            item.event.envelope.type,
            attempts=self._max_attempts,
        )

    async def _until_infrastructure_answers(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work`; while it fails and the database does not answer, wait and retry.

        A failure while the database answers is the event's (or a conflict): it is
        raised, to be retried a bounded number of times by the caller.
        """
        delay = max(self._backoff, 0.05)
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if await self._infrastructure_answers():
                    raise
                log.warning("database unavailable, retrying in %.1fs: %r", delay, error)
                self._metrics.retries.labels(self.group_id, "infrastructure").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dead_letter(
        self,
        record: Record,
        reason: str,
        error: BaseException | None,
        event_type: str,
        attempts: int = 1,
    ) -> None:
        headers = {
            name: (value or b"").decode(errors="replace")
            for name, value in record.headers
            if name.isascii()
        }
        headers.update(
            {
                "dealflow-dlq-reason": reason,
                "dealflow-dlq-error": _describe(error),
                "dealflow-dlq-consumer-group": self.group_id,
                "dealflow-dlq-original-topic": record.topic,
                "dealflow-dlq-original-partition": str(record.partition),
                "dealflow-dlq-original-offset": str(record.offset),
                "dealflow-dlq-attempts": str(attempts),
                "dealflow-dlq-failed-at": self._clock().isoformat(),
            }
        )
        log.error(
            "dead-lettering %s/%d@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            _describe(error),
        )
        delay = max(self._backoff, 0.05)
        for attempt in range(1, self._dead_letter_attempts + 1):
            try:
                await self._send_dead_letter(
                    dead_letter_topic(record.topic), record.key, record.value or b"", headers
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as send_error:
                log.warning(
                    "dead-letter topic %s unavailable (attempt %d of %d): %r",
                    dead_letter_topic(record.topic),
                    attempt,
                    self._dead_letter_attempts,
                    send_error,
                )
                if attempt == self._dead_letter_attempts:
                    # Moving on without the dead letter written would lose the record.
                    self._metrics.events.labels(
                        self.group_id, event_type, "dead_letter_failed"
                    ).inc()
                    raise DeadLetterUnavailable(str(send_error)) from send_error
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._metrics.events.labels(self.group_id, event_type, "dead_lettered").inc()


def _envelope_trace(envelope: CloudEvent) -> dict[str, str] | None:
    if envelope.traceparent is None:
        return None
    return {"traceparent": envelope.traceparent, "tracestate": envelope.tracestate or ""}


def _read_headers(record: Record) -> tuple[dict[str, str], str | None]:
    """The CloudEvents headers of a record, or why they cannot be trusted.

    Other headers are not ours to judge: a null or binary value there is legal Kafka
    and does not stop the event.
    """
    headers: dict[str, str] = {}
    for name, value in record.headers or ():
        if not name.startswith("ce_"):
            continue
        if value is None:
            return {}, f"header {name} has no value"
        try:
            headers[name] = value.decode()
        except UnicodeDecodeError:
            return {}, f"header {name} is not UTF-8"
    return headers, None


# PostgreSQL: the batch's ids travel as arrays, so the statement is one prepared
# statement whatever the batch's size (the multi-row VALUES form is a new text per size).
_REMEMBER_ON_POSTGRES = DirectStatement(
    text(
        """
INSERT INTO inbox (consumer_group, event_id, event_type, source, subject, applied_at)
SELECT CAST(:consumer_group AS varchar), e.event_id, e.event_type, e.source, e.subject,
       CAST(:applied_at AS timestamptz)
FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:event_types AS text[]),
        CAST(:sources AS text[]), CAST(:subjects AS text[])
    ) AS e(event_id, event_type, source, subject)
ON CONFLICT (consumer_group, event_id) DO NOTHING
RETURNING event_id
"""
    ).columns(event_id=Uuid)
)


@functools.cache
def _inbox_insert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(inbox)
        .on_conflict_do_nothing(index_elements=[inbox.c.consumer_group, inbox.c.event_id])
        .returning(inbox.c.event_id)
    )


def is_transient(error: BaseException) -> bool:
    """Failures that a retry of the same work can cure: the database connection, a
    deadlock or serialization conflict, a lock or statement timeout."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return sqlstate in _RETRYABLE_SQLSTATES
    return isinstance(error, sa_exc.TimeoutError)


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, sa_exc.IntegrityError):
        return "conflict"
    return "transient" if is_transient(error) else "application"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = "".join(traceback.format_exception_only(error)).strip()
    return text[:2000]
