"""The running parts every service has, built once by the service's bootstrap.

A `Platform` owns the database engine, the Kafka producer, the outbox and its relay,
the event consumers, the scheduler and the token verifier, and starts and stops them
in order. A service adds only its own domain: repositories, use cases, routes,
handlers and jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.audit import RefusalAudit
from dealflow_common.auth import TokenVerifier
from dealflow_common.db import count_statements, create_engine, reading
from dealflow_common.direct import run_through_sqlalchemy
from dealflow_common.idempotency import forget_old_keys
from dealflow_common.messaging.consumer import (
    BatchPreparation,
    ChangesNothing,
    ConsumerMetrics,
    EventConsumer,
    EventHandler,
)
from dealflow_common.messaging.kafka import (
    ConsumerLoop,
    ConsumerLoopMetrics,
    KafkaProducer,
    connect_with_retry,
)
from dealflow_common.messaging.outbox import Outbox, OutboxRelay, RelayMetrics
from dealflow_common.settings import ServiceSettings
from dealflow_common.telemetry import tracing_enabled
from dealflow_common.uow import UnitOfWork

log = logging.getLogger(__name__)

U = TypeVar("U", bound=UnitOfWork)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Platform:
    settings: ServiceSettings
    engine: AsyncEngine
    producer: KafkaProducer
    outbox: Outbox
    relay: OutboxRelay
    registry: CollectorRegistry
    token_verifier: TokenVerifier
    scheduler: AsyncIOScheduler
    clock: Callable[[], datetime]
    published_topics: tuple[str, ...]
    audit: RefusalAudit | None = None
    """Where refused requests are logged and counted (the HTTP layer records them)."""
    consumers: list[EventConsumer[Any]] = field(default_factory=list)
    consumer_loops: list[ConsumerLoop] = field(default_factory=list)
    kafka_connected: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _consumer_metrics: ConsumerMetrics | None = None
    _loop_metrics: ConsumerLoopMetrics | None = None

    @property
    def consumed_topics(self) -> tuple[str, ...]:
        return tuple(sorted({t for c in self.consumers for t in c.topics}))

    def add_consumer(
        self,
        *,
        group_id: str,
        topics: Iterable[str],
        handlers: Mapping[str, EventHandler],
        unit_of_work: Callable[[], U],
        background: bool = False,
        before_batch: BatchPreparation | None = None,
        changes_nothing: ChangesNothing | None = None,
    ) -> EventConsumer[U]:
        """Apply `handlers` to events of `topics`, once each, in consumer group `group_id`.

        `background`: no request and no saga step waits on this consumer, so it reads
        less often and in larger batches (`ConsumerLoop`). `before_batch` runs first in
        each batch's transaction (it locks the handlers' projection rows ahead).
        `changes_nothing` names the events of handled types their handler would leave
        as they are: they are skipped before the transaction, as `ignored`.
        """
        if self._consumer_metrics is None or self._loop_metrics is None:
            self._consumer_metrics = ConsumerMetrics(self.registry)
            self._loop_metrics = ConsumerLoopMetrics(self.registry)
        consumer = EventConsumer(
            group_id=group_id,
            topics=tuple(topics),
            handlers=handlers,
            unit_of_work=unit_of_work,
            send_dead_letter=self.producer.send_and_wait,
            clock=self.clock,
            max_attempts=self.settings.consumer_max_attempts,
            retry_backoff=self.settings.consumer_retry_backoff_ms / 1000,
            metrics=self._consumer_metrics,
            infrastructure_answers=self._database_answers,
            before_batch=before_batch,
            changes_nothing=changes_nothing,
        )
        self.consumers.append(consumer)
        self.consumer_loops.append(
            ConsumerLoop(
                consumer,
                self.settings,
                self._loop_metrics,
                self.kafka_connected.wait,
                background=background,
            )
        )
        return consumer

    def forget_request_keys(self, table: Table) -> None:
        """Forget the `Idempotency-Key`s of `table` once past their retention."""
        retention = timedelta(hours=self.settings.idempotency_key_retention_hours)

        async def forget() -> None:
            await forget_old_keys(self.engine, table, self.clock() - retention)

        self.scheduler.add_job(
            forget,
            "interval",
            minutes=10,
            id="forget-request-keys",
            max_instances=1,
            coalesce=True,
        )

    async def start(self) -> None:
        self.kafka_connected.clear()
        topics = (*self.published_topics, *self.consumed_topics)
        self._spawn(connect_with_retry(self.producer, self.settings, topics, self.kafka_connected))
        self._spawn(self.relay.run(self.kafka_connected.wait))
        for loop in self.consumer_loops:
            self._spawn(loop.run())
        if self.scheduler.get_jobs():
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.producer.stop()
        await self.engine.dispose()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    async def readiness(self) -> dict[str, bool]:
        """What `/readyz` reports; every check is bounded, so readiness never hangs.

        - database: it answers a query within 2 s;
        - broker: it answers a metadata request within 2 s and the relay's last batch
          was acked (a broker that accepts connections but stores nothing is away);
        - consumers: every consumer is connected and no partition is stalled on a
          record it could neither apply nor dead-letter.
        """
        database, broker = await asyncio.gather(
            self._database_answers(), self.producer.answers(timeout=2.0)
        )
        return {
            "database": database,
            "broker": self.kafka_connected.is_set() and broker and self.relay.publishing,
            "consumers": all(
                loop.running and loop.stalled_partitions == 0 for loop in self.consumer_loops
            ),
        }

    async def database_answers(self) -> bool:
        """Whether the database answers a query within 2 s (what consumers ask after a
        failure, to tell the world's failures from the event's)."""
        return await self._database_answers()

    async def _database_answers(self) -> bool:
        try:
            # Read-only: on SQLite a plain BEGIN, not the writer lock.
            async with asyncio.timeout(2.0), reading(self.engine) as connection:
                await connection.execute(text("SELECT 1"))
                await connection.rollback()
            return True
        except Exception:
            return False


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task crashed", exc_info=task.exception())


def build_platform(
    settings: ServiceSettings,
    *,
    publishes: Iterable[str],
    clock: Callable[[], datetime] = utc_now,
) -> Platform:
    engine = create_engine(settings)
    if tracing_enabled():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # One span per statement, under the request's or the consumer's span. The
        # instrumentation declares SQLAlchemy < 2.1; the engine events it listens to are
        # unchanged in 2.1, and tests/integration/test_tracing.py checks it still works.
        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
        # Its spans come from SQLAlchemy's events, which direct statements do not fire.
        run_through_sqlalchemy(engine)
    producer = KafkaProducer(settings)
    registry = CollectorRegistry()
    count_statements(engine, registry)
    outbox = Outbox(source=f"/dealflow/{settings.service_name}")
    relay = OutboxRelay(
        engine,
        outbox,
        producer.send,
        schema_name=settings.db_schema,
        clock=clock,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval_ms / 1000,
        publish_timeout=settings.outbox_publish_timeout_ms / 1000,
        outbox_retention=timedelta(hours=settings.outbox_retention_hours),
        inbox_retention=timedelta(hours=settings.inbox_retention_hours),
        metrics=RelayMetrics(registry),
    )
    Gauge("dealflow_service_info", "Service identity", ["service"], registry=registry).labels(
        settings.service_name
    ).set(1)
    return Platform(
        settings=settings,
        engine=engine,
        producer=producer,
        outbox=outbox,
        relay=relay,
        registry=registry,
        token_verifier=TokenVerifier(
            secret=settings.jwt_secret,
            jwks_url=settings.jwt_jwks_url,
            audience=settings.jwt_audience,
            allow_hs256=settings.jwt_allow_hs256,
            issuer=settings.jwt_issuer,
            max_token_bytes=settings.jwt_max_token_bytes,
            jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
        ),
        scheduler=AsyncIOScheduler(timezone=UTC),
        clock=clock,
        published_topics=tuple(publishes),
        audit=RefusalAudit(registry),
    )
