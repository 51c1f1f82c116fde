"""Idempotent event consumers: apply each event once, then commit its offset.

A batch of records from Kafka is applied in one transaction: for each event its
envelope id is inserted into the inbox (an id already there is a duplicate and is
skipped), its handler runs, and the transaction commits; only then is the offset
committed (at-least-once delivery, effectively-once effect).

When the batch fails, each event is retried alone so one bad event does not hold the
others. A failure of the database or the network is retried until it passes: the
event is fine, the world is not, and dropping it would lose it. Any other failure is
retried `max_attempts` times and the event then goes to `<topic>.dlq` with the error,
so nothing blocks a partition forever. An unreadable envelope, or a schema version
this service does not know, goes to the dead-letter topic at once.

Handlers never see a record twice in one service: duplicates are skipped here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from dealflow_common.context import flow
from dealflow_common.contracts.base import EventPayload, payload_class
from dealflow_common.contracts.envelope import CloudEvent
from dealflow_common.contracts.topics import dead_letter_topic
from dealflow_common.messaging.tables import inbox
from dealflow_common.uow import UnitOfWork

log = logging.getLogger(__name__)

P = TypeVar("P", bound=EventPayload)
U = TypeVar("U", bound=UnitOfWork)

# PostgreSQL SQLSTATEs that mean "try again": serialization failure, deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


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
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class IncomingEvent(Generic[P]):
    envelope: CloudEvent
    payload: P


EventHandler = Callable[[Any, IncomingEvent[Any]], Awaitable[None]]
"""(unit of work, event) -> None; the handler records its own events on the unit of work."""

DeadLetterSender = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
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

    @property
    def handled_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    async def apply_batch(self, records: Sequence[Record]) -> None:
        """Apply every record of a batch; returns when each is applied or dead-lettered."""
        decoded: list[_Decoded] = []
        for record in records:
            item = await self._decode(record)
            if item is not None:
                decoded.append(item)
        if not decoded:
            return
        try:
            await self._until_infrastructure_answers(lambda: self._apply(decoded))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("batch of %d events failed; applying one by one", len(decoded))
            for item in decoded:
                await self._apply_alone(item)

    async def _decode(self, record: Record) -> _Decoded | None:
        try:
            envelope = CloudEvent.model_validate_json(record.value or b"")
        except ValidationError as error:
            await self._dead_letter(record, "unreadable CloudEvents envelope", error, "?")
            return None
        handler = self._handlers.get(envelope.type)
        if handler is None:
            self._metrics.events.labels(self.group_id, envelope.type, "ignored").inc()
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
        return _Decoded(record, IncomingEvent(envelope, payload), handler)

    async def _apply(self, items: Sequence[_Decoded]) -> None:
        async with self._unit_of_work() as uow:
            outcomes = []
            for item in items:
                envelope = item.event.envelope
                if not await self._remember(uow, envelope):
                    outcomes.append((envelope.type, "duplicate"))
                    continue
                with flow(envelope.correlationid, str(envelope.id)):
                    await item.handler(uow, item.event)
                outcomes.append((envelope.type, "applied"))
            await uow.commit()
        for event_type, outcome in outcomes:
            self._metrics.events.labels(self.group_id, event_type, outcome).inc()

    async def _remember(self, uow: UnitOfWork, envelope: CloudEvent) -> bool:
        """Insert the event id into the inbox; False when it was applied before."""
        remembered = await uow.connection.execute(
            _inbox_insert(uow.connection.dialect.name),
            {
                "consumer_group": self.group_id,
                "event_id": envelope.id,
                "event_type": envelope.type,
                "source": envelope.source,
                "subject": envelope.subject,
                "applied_at": self._clock(),
            },
        )
        return remembered.first() is not None

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
                self._metrics.retries.labels(self.group_id, "application").inc()
                await asyncio.sleep(self._backoff * attempt)
        await self._dead_letter(
            item.record,
            "handler failed",
            last_error,
            item.event.envelope.type,
            attempts=self._max_attempts,
        )

    async def _until_infrastructure_answers(self, work: Callable[[], Awaitable[None]]) -> None:
        delay = max(self._backoff, 0.05)
        while True:
            try:
                await work()
                return
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("database or network unavailable, retrying in %.1fs: %r", delay, error)
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
        headers = {name: value.decode(errors="replace") for name, value in record.headers}
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
        while True:
            try:
                await self._send_dead_letter(
                    dead_letter_topic(record.topic), record.key, record.value or b"", headers
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as send_error:
                # Without the dead letter written, moving on would lose the event.
                log.warning("dead-letter topic unavailable, retrying: %r", send_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._metrics.events.labels(self.group_id, event_type, "dead_lettered").inc()


@functools.cache
def _inbox_insert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(inbox)
        .on_conflict_do_nothing(index_elements=[inbox.c.consumer_group, inbox.c.event_id])
        .returning(inbox.c.event_id)
    )


def is_transient(error: BaseException) -> bool:
    """Failures of the database connection or the network, as opposed to the event."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return sqlstate in _RETRYABLE_SQLSTATES
    return isinstance(error, ConnectionError | TimeoutError | OSError | sa_exc.TimeoutError)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = "".join(traceback.format_exception_only(error)).strip()
    return text[:2000]
