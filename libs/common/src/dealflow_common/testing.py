"""Where the tests find PostgreSQL and Kafka, in the order the project promises:

1. `DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` when set;
2. testcontainers (PostgreSQL, Apache Kafka) when a Docker engine answers;
3. the machine's PostgreSQL on 127.0.0.1:5432 and the embedded Tansu broker.

Each test session works in schemas of its own (random names), so runs never see each
other's rows, and drops them at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dealflow_common.runtime.broker import EmbeddedBroker, free_port

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


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
