"""Test support (imported by the tests only; it needs the dev dependencies).

Where the tests find PostgreSQL and Kafka, in the order the project promises:

1. `DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` when set;
2. testcontainers (PostgreSQL, Apache Kafka) when a Docker engine answers;
3. the machine's PostgreSQL on 127.0.0.1:5432 and the embedded Tansu broker.

Each test session works in schemas of its own (random names), so runs never see each
other's rows, and drops them at the end.

Component tests run once per backend in `BACKENDS`: on PostgreSQL, as production does,
and on SQLite, the default of `make run`. `ComponentDatabases` gives each service under
test a fresh schema or a fresh file, migrated by the service's own migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import Customer, OpportunityState, Stage
from dealflow_common.db import reading
from dealflow_common.messaging.tables import inbox, outbox
from dealflow_common.migrations import migrate
from dealflow_common.platform import Platform, build_platform
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.settings import ServiceSettings, secret_fields

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

BACKENDS = ("postgresql", "sqlite")
"""The databases every component test runs on (its ids: `[postgresql]`, `[sqlite]`)."""


@dataclass(frozen=True)
class KafkaEndpoint:
    bootstrap_servers: str
    idempotence: bool
    kind: str
    broker: EmbeddedBroker | None = None


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    yield LOCAL_POSTGRES


@contextlib.contextmanager
def kafka_endpoint() -> Iterator[KafkaEndpoint]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        idempotence = os.environ.get("DEALFLOW_KAFKA_ENABLE_IDEMPOTENCE", "false") == "true"
        yield KafkaEndpoint(given, idempotence, "external")
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as container:
            yield KafkaEndpoint(container.get_bootstrap_server(), True, "testcontainers")
        return
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    try:
        yield KafkaEndpoint(broker.bootstrap_servers, False, "embedded", broker)
    finally:
        broker.stop()


def new_schema_name(prefix: str) -> str:
    return f"{prefix}_t{uuid.uuid4().hex[:10]}"


async def drop_schemas(database_url: str, schemas: list[str]) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for schema in schemas:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]
    value: bytes
    event: dict[str, Any]
    """The parsed CloudEvent, or {} when the value is not JSON (a dead letter may not be)."""


class TopicReader:
    """A plain Kafka client, as any subscriber would use: no group, from the beginning."""

    def __init__(self, bootstrap_servers: str, *topics: str) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        self.records: list[ReadRecord] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def poll(self, seconds: float) -> None:
        batches = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            for r in records:
                self.records.append(
                    ReadRecord(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        dict(r.headers),
                        r.value or b"",
                        _json_or_empty(r.value),
                    )
                )

    async def wait_for(
        self, done: Callable[[list[ReadRecord]], bool], timeout: float = 30.0
    ) -> list[ReadRecord]:
        """Read until `done(records)` holds; fail with what was read after `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(self.records):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"gave up after {timeout:.0f}s; read "
                    + ", ".join(
                        f"{r.event.get('type')}#{r.event.get('sequence')}"
                        for r in self.records[-20:]
                    )
                )
            await self.poll(0.2)
        return self.records

    async def settle(self, seconds: float = 1.5) -> list[ReadRecord]:
        """Keep reading a little longer, to catch duplicates that would arrive late."""
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            await self.poll(0.2)
        return self.records

    def of(self, subject: str) -> list[ReadRecord]:
        return [r for r in self.records if r.event.get("subject") == subject]


def _json_or_empty(value: bytes | None) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def deal_state(opportunity_id: uuid.UUID, **fields: Any) -> OpportunityState:
    """A deal as the opportunity service publishes it (in `opportunity.created`), for a
    test or a benchmark that makes it known to another service: an open deal of ACME for
    1,000 USD in `proposal`, owned by alice of team emea, but for what `fields` say."""
    now = datetime.now(UTC)
    state: dict[str, Any] = {
        "id": opportunity_id,
        "title": "Fleet",
        "description": None,
        "customer": Customer(kind="organization", id="acme", name="ACME"),
        "contact": None,
        "contact_address": None,
        "value": Money.of("1000", "USD"),
        "stage": Stage.PROPOSAL,
        "probability": 50,
        "expected_close_date": None,
        "next_action": None,
        "lead_origin": None,
        "external_reference": None,
        "owners": ["alice"],
        "team_id": "emea",
        "won_quote_id": None,
        "order_id": None,
        "lost_reason": None,
        "created_by": "alice",
        "created_at": now,
        "updated_at": now,
        "closed_at": None,
        "version": 1,
    }
    state.update(fields)
    return OpportunityState(**state)


def envelope_bytes(
    payload: Any,
    *,
    source: str = "/dealflow/test",
    event_id: uuid.UUID | None = None,
    correlation_id: str = "test-flow",
    sequence: int = 1,
    time: datetime | None = None,
) -> bytes:
    """A CloudEvents record as the outbox of `source` would write it, for consumer tests."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(event_id or uuid.uuid4()),
            "source": source,
            "type": payload.event_type,
            "subject": payload.subject,
            "time": time.isoformat() if time else "2026-11-24T12:00:00+00:00",
            "datacontenttype": "application/json",
            "dataschema": payload.dataschema(),
            "data": payload.model_dump(mode="json"),
            "correlationid": correlation_id,
            "sequence": sequence,
        }
    )


@dataclass
class FakeRecord:
    """A Kafka record as a consumer receives it, for feeding `EventConsumer.apply_batch`."""

    value: bytes
    topic: str = "dealflow.test"
    key: bytes | None = None
    partition: int = 0
    offset: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class MovableClock:
    """A service clock the tests move, to measure durations and reach due times."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class ServiceUnderTest:
    """One service's app on a real database, called in-process; no broker, no relay.

    The relay does not run, so the outbox keeps what each request wrote for the test
    to read; events reach the service's consumers through `consume`.
    """

    http: httpx.AsyncClient
    platform: Platform
    clock: MovableClock
    token: Callable[..., str]
    sequences: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    """The last sequence `consume` gave each subject's events."""
    app: Any = None
    """The ASGI app `http` calls, for a caller that calls it without a client
    (`bench.requests` measures the app's own CPU)."""

    @property
    def engine(self) -> AsyncEngine:
        return self.platform.engine

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A connection that only reads: on SQLite it does not wait for the writer."""
        return reading(self.engine)

    def headers(
        self,
        user: str,
        roles: tuple[str, ...],
        teams: tuple[str, ...],
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, roles, teams)}", **(extra or {})}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "alice",
        roles: tuple[str, ...] = ("rep",),
        teams: tuple[str, ...] = ("emea",),
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.request(
            method, path, json=body, headers=self.headers(user, roles, teams, headers)
        )

    async def row_counts(self, *tables: Table) -> dict[str, int]:
        """Counts of rows: equal before and after a refused request = nothing written."""
        async with self._read() as connection:
            return {
                t.name: int(await connection.scalar(select(func.count()).select_from(t)) or 0)
                for t in (*tables, outbox, inbox)
            }

    async def events_of(self, subject: str) -> list[tuple[str, int]]:
        """(type, sequence) of every event this service wrote about `subject`."""
        async with self._read() as connection:
            rows = await connection.execute(
                select(outbox.c.event_type, outbox.c.sequence)
                .where(outbox.c.subject == subject)
                .order_by(outbox.c.id)
            )
            return [(event_type, sequence) for event_type, sequence in rows]

    async def envelopes_of(self, subject: str) -> list[dict[str, Any]]:
        async with self._read() as connection:
            rows = await connection.execute(
                select(outbox.c.envelope).where(outbox.c.subject == subject).order_by(outbox.c.id)
            )
            return [orjson.loads(envelope) for (envelope,) in rows]

    async def consume(
        self,
        *payloads: Any,
        event_id: uuid.UUID | None = None,
        sequence: int | None = None,
        time: datetime | None = None,
    ) -> None:
        """Deliver events to the service's consumer of their topic, as Kafka would.

        Each subject's events are numbered 1, 2, 3... in the order consumed, as their
        source numbers them; `sequence` gives one out of that order (a late record);
        `time` is the envelope's (a fixed moment in the past when not given)."""
        for payload in payloads:
            (consumer,) = [c for c in self.platform.consumers if payload.topic in c.topics]
            if sequence is None:
                number = self.sequences[payload.subject] = self.sequences[payload.subject] + 1
            else:
                number = sequence
                self.sequences[payload.subject] = max(self.sequences[payload.subject], sequence)
            await consumer.apply_batch(
                [
                    FakeRecord(
                        envelope_bytes(payload, event_id=event_id, sequence=number, time=time),
                        topic=payload.topic,
                        key=payload.subject.encode(),
                    )
                ]
            )

    async def consume_together(self, *payloads: Any) -> None:
        """Deliver events as one poll's records, numbered per subject in the order given
        as `consume` numbers them, each with a new event id (`consume_batch`)."""
        deliveries = []
        for payload in payloads:
            self.sequences[payload.subject] += 1
            deliveries.append((payload, self.sequences[payload.subject], uuid.uuid4()))
        await self.consume_batch(*deliveries)

    async def consume_batch(self, *deliveries: tuple[Any, int, uuid.UUID]) -> None:
        """Deliver events as one poll's records, applied in one transaction: each a
        (payload, sequence, event id), all of topics one consumer reads (`consume`
        delivers one by one)."""
        topics = {payload.topic for payload, _, _ in deliveries}
        (consumer,) = [c for c in self.platform.consumers if topics <= set(c.topics)]
        for payload, sequence, _ in deliveries:
            self.sequences[payload.subject] = max(self.sequences[payload.subject], sequence)
        await consumer.apply_batch(
            [
                FakeRecord(
                    envelope_bytes(payload, event_id=event_id, sequence=sequence),
                    topic=payload.topic,
                    key=payload.subject.encode(),
                    offset=offset,
                )
                for offset, (payload, sequence, event_id) in enumerate(deliveries)
            ]
        )


S = TypeVar("S", bound=ServiceUnderTest)
Settings = TypeVar("Settings", bound=ServiceSettings)


def settings_for(
    settings_class: type[Settings], database_url: str, jwt_secret: str, **extra: Any
) -> Settings:
    """A service's settings for an in-process test: no broker, every secret filled."""
    secrets: dict[str, Any] = {
        name: f"{name}-for-tests-only-0123456789abcdef"
        for name in secret_fields(settings_class)
        if name != "jwt_secret"
    }
    return settings_class(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET=jwt_secret,
        **secrets,
        **extra,
    )


@dataclass
class ComponentDatabases:
    """Where the component tests of one backend put each service's database.

    On PostgreSQL a schema of its own (dropped at the end of the session), on SQLite a
    file of its own in the session's temporary directory: either way fresh, and migrated
    by `service_under_test` with the service's Alembic migrations, as in production.
    """

    backend: str
    sqlite_directory: Path
    postgres_url: str | None = None
    schemas: list[str] = field(default_factory=list)

    def settings(self, settings_class: type[Settings], jwt_secret: str, **extra: Any) -> Settings:
        name = new_schema_name(settings_class.service_name)
        if self.backend == "postgresql":
            assert self.postgres_url is not None, "PostgreSQL databases need its URL"
            self.schemas.append(name)
            return settings_for(
                settings_class, self.postgres_url, jwt_secret, database_schema=name, **extra
            )
        url = f"sqlite+aiosqlite:///{self.sqlite_directory / name}.db"
        return settings_for(settings_class, url, jwt_secret, **extra)


@contextlib.asynccontextmanager
async def service_under_test(
    kind: type[S],
    settings: ServiceSettings,
    build_app: Callable[..., Any],
    migrations: Path,
    token: Callable[..., str],
    publishes: list[str],
) -> AsyncIterator[S]:
    """`kind` is ServiceUnderTest or a subclass adding the service's own helpers."""
    await migrate(settings, migrations)
    clock = MovableClock()
    platform = build_platform(settings, publishes=publishes, clock=clock)
    app = build_app(settings, platform)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        yield kind(http, platform, clock, token, app=app)
    await platform.engine.dispose()


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """A real uvicorn server for `app` on a free loopback port (yielded) for as long as
    the block runs; `config`: uvicorn's own settings (`http=` a protocol class, say)."""
    import uvicorn

    port = free_port()
    running = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", **config)
    )
    task = asyncio.create_task(running.serve())
    for _ in range(500):
        if running.started:
            break
        await asyncio.sleep(0.01)
    assert running.started, "uvicorn did not start within 5 s"
    try:
        yield port
    finally:
        running.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[Any]:
    """Tracing on for one test, its spans kept in memory; yields the exporter.

    The process's tracer provider can be set only once, so the first call installs one
    whose spans go to a shared in-memory exporter; each call clears it and switches
    Dealflow's tracing on for its duration only (off is the default of every test).
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from dealflow_common import telemetry

    global _span_exporter
    if _span_exporter is None:
        _span_exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_span_exporter))
        trace.set_tracer_provider(provider)
    _span_exporter.clear()
    was_enabled = telemetry._enabled
    telemetry._enabled = True
    try:
        yield _span_exporter
    finally:
        telemetry._enabled = was_enabled
        _span_exporter.clear()


_span_exporter: Any = None


async def until_waiting(connection: AsyncConnection, table: str, waiting: int) -> None:
    """Return once `waiting` statements wait for a lock on `table` (PostgreSQL): requests
    held at a write, so that a test lets them go together."""
    waiters = text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:t AS regclass)"
    )
    for _ in range(500):
        if await connection.scalar(waiters, {"t": table}) >= waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{waiting} writers never queued for the {table} table")


@contextlib.asynccontextmanager
async def writes_held(
    service: ServiceUnderTest, backend: str, waiting: int, table: str
) -> AsyncIterator[None]:
    """Make writes of `table` wait while the block runs, then let them go together once
    `waiting` of them queue.

    Reads go on meanwhile, so requests started in the block all read what is stored and
    then queue to write: they meet exactly as two clients clicking at once would.
    """
    async with service.engine.connect() as holder:
        await holder.begin()  # on SQLite: BEGIN IMMEDIATE, the one write lock
        if backend == "postgresql":
            # SHARE mode lets SELECT through and makes INSERT and UPDATE wait.
            await holder.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
        yield
        if backend == "postgresql":
            await until_waiting(holder, table, waiting)
        else:
            await asyncio.sleep(0.3)  # SQLite shows no waiters: give them time to queue
        await holder.rollback()
