"""An event delivered twice is applied once: the platform's consumer on the real broker
and the real database (its aiokafka consumer loop, manual commits, inbox and DLQ)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.db import create_engine
from dealflow_common.messaging.consumer import IncomingEvent
from dealflow_common.messaging.tables import create_messaging_tables
from dealflow_common.platform import build_platform
from dealflow_common.settings import ServiceSettings
from dealflow_common.testing import TopicReader, new_schema_name
from dealflow_common.uow import UnitOfWork

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_text", String(200), nullable=False),
)


def envelope(text_value: str, event_id: uuid.UUID) -> bytes:
    subject = uuid.uuid4()
    data = OpportunityNoteAdded(
        opportunity_id=subject,
        note_id=uuid.uuid4(),
        reason=NoteReason.GENERAL,
        text=text_value,
        added_by="alice",
        added_at=NOW,
    ).model_dump(mode="json")
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(event_id),
            "source": "/dealflow/test",
            "type": "opportunity.note_added",
            "subject": str(subject),
            "time": NOW.isoformat(),
            "datacontenttype": "application/json",
            "dataschema": "urn:dealflow:schema:opportunity.note_added:v1",
            "data": data,
            "correlationid": "flow",
            "sequence": 1,
        }
    )


async def test_a_redelivered_event_is_applied_once_and_poison_goes_to_the_dlq(
    kafka, database_url, schemas, jwt_secret
) -> None:
    schema = new_schema_name("inboxtest")
    schemas.append(schema)
    topic = f"dealflow.test.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DEALFLOW_JWT_SECRET=jwt_secret,
        database_schema=schema,
        kafka_enable_idempotence=kafka.idempotence,
        kafka_replication_factor=1,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        kafka_fetch_max_wait_ms=20,
        consumer_retry_backoff_ms=10,
    )
    setup = create_engine(settings)
    async with setup.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(create_messaging_tables)
        await connection.run_sync(effects_metadata.create_all)
    await setup.dispose()

    async def apply(uow: UnitOfWork, event: IncomingEvent[Any]) -> None:
        await uow.connection.execute(insert(effects).values(event_text=event.payload.text))

    async def count(value: str) -> int:
        async with platform.engine.connect() as connection:
            return int(
                await connection.scalar(
                    select(func.count()).select_from(effects).where(effects.c.event_text == value)
                )
            )

    async def until(condition: Any, timeout: float = 30.0) -> None:
        for _ in range(int(timeout * 10)):
            if await condition():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("condition not reached")

    def consumer_platform() -> Any:
        platform = build_platform(settings, publishes=[])
        platform.add_consumer(
            group_id="inbox-test",
            topics=[topic],
            handlers={"opportunity.note_added": apply},
            unit_of_work=lambda: UnitOfWork(platform.engine, platform.outbox, platform.clock),
        )
        return platform

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    twice = uuid.uuid4()
    platform = consumer_platform()
    try:
        await platform.start()
        await asyncio.wait_for(platform.kafka_connected.wait(), 30)
        key = b"same-deal"
        for value in (
            envelope("twice", twice),
            b"{not an envelope",
            envelope("twice", twice),
            envelope("after", uuid.uuid4()),
        ):
            await producer.send_and_wait(topic, value, key=key)
        await until(lambda: _gt(count("after"), 0))
        assert await count("twice") == 1

        async with TopicReader(kafka.bootstrap_servers, topic + ".dlq") as dlq:
            await dlq.wait_for(lambda records: len(records) >= 1)
        poison = dlq.records[0]
        assert poison.headers["dealflow-dlq-reason"] == b"unreadable CloudEvents envelope"
        assert poison.headers["dealflow-dlq-consumer-group"] == b"inbox-test"
        assert poison.key == key
        assert poison.value == b"{not an envelope"
    finally:
        await platform.stop()

    # A restarted consumer of the same group: the old records are committed, and the
    # same event delivered once more is still applied only once.
    await producer.send_and_wait(topic, envelope("twice", twice), key=b"same-deal")
    await producer.send_and_wait(topic, envelope("last", uuid.uuid4()), key=b"same-deal")
    platform = consumer_platform()
    try:
        await platform.start()
        await until(lambda: _gt(count("last"), 0), timeout=60)
        assert (await count("twice"), await count("after")) == (1, 1)
    finally:
        await platform.stop()
        await producer.stop()


async def _gt(value: Any, than: int) -> bool:
    return bool(await value > than)


async def test_records_that_break_a_batch_parser_are_dead_lettered_and_nothing_is_skipped(
    kafka, database_url, schemas, jwt_secret
) -> None:
    """Legal Kafka records that are no CloudEvent, between events of one partition: a
    header without a value, no value at all, a header that is not UTF-8. Every event
    around them is applied and the group's committed offset reaches the end, so no
    later commit can have skipped one (FastStream's batch parser raised on the first of
    these, and the batch around it was never applied)."""
    schema = new_schema_name("inboxtest")
    schemas.append(schema)
    topic = f"dealflow.test.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DEALFLOW_JWT_SECRET=jwt_secret,
        database_schema=schema,
        kafka_enable_idempotence=kafka.idempotence,
        kafka_replication_factor=1,
        kafka_topic_partitions=1,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        kafka_fetch_max_wait_ms=20,
        consumer_retry_backoff_ms=10,
    )
    setup = create_engine(settings)
    async with setup.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(create_messaging_tables)
        await connection.run_sync(effects_metadata.create_all)
    await setup.dispose()

    async def apply(uow: UnitOfWork, event: IncomingEvent[Any]) -> None:
        await uow.connection.execute(insert(effects).values(event_text=event.payload.text))

    platform = build_platform(settings, publishes=[topic])
    platform.add_consumer(
        group_id="poison-test",
        topics=[topic],
        handlers={"opportunity.note_added": apply},
        unit_of_work=lambda: UnitOfWork(platform.engine, platform.outbox, platform.clock),
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    texts = [f"event {n}" for n in range(30)]
    poison = 0
    try:
        await platform.start()
        # The topic is created with one partition before anything is produced to it.
        await asyncio.wait_for(platform.kafka_connected.wait(), 30)
        for n, value in enumerate(texts):
            await producer.send(topic, envelope(value, uuid.uuid4()), key=b"deal")
            if n % 10 == 3:
                await producer.send(
                    topic, b'{"not": "a cloudevent"}', key=b"deal", headers=[("trace", None)]
                )
                await producer.send(topic, None, key=b"deal")
                await producer.send(
                    topic,
                    envelope("bad header", uuid.uuid4()),
                    key=b"deal",
                    headers=[("ce_type", b"\xff\xfe")],
                )
                poison += 3
        await producer.flush()

        async def all_applied() -> bool:
            async with platform.engine.connect() as connection:
                return int(await connection.scalar(select(func.count()).select_from(effects))) >= 30

        for _ in range(300):
            if await all_applied():
                break
            await asyncio.sleep(0.1)
        async with platform.engine.connect() as connection:
            applied = list((await connection.execute(select(effects.c.event_text))).scalars())
        assert sorted(applied) == sorted(texts)

        async with TopicReader(kafka.bootstrap_servers, topic + ".dlq") as dlq:
            await dlq.wait_for(lambda records: len(records) >= poison)
            await dlq.settle()
        assert len(dlq.records) == poison
        assert {r.headers["dealflow-dlq-reason"] for r in dlq.records} == {
            b"unreadable CloudEvents envelope",
            b"record has no value",
            b"header ce_type is not UTF-8",
        }
    finally:
        await platform.stop()

    checker = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id="poison-test")
    await checker.start()
    try:
        committed = await checker.committed(TopicPartition(topic, 0))
    finally:
        await checker.stop()
        await producer.stop()
    assert committed == len(texts) + poison
