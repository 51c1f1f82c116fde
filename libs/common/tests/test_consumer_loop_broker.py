"""The consumer loop on the real broker: a read that skips a record is read again from
it, through aiokafka's own seek and prefetch, before anything after it is applied."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from dealflow_common.messaging.consumer import PartitionKey, Record
from dealflow_common.messaging.kafka import ConsumerLoop, ConsumerLoopMetrics, ensure_topics
from dealflow_common.settings import ServiceSettings
from dealflow_common.testing import KafkaEndpoint

RECORDS = 40
SKIPPED = 7


class SkipsOnce:
    """A real aiokafka consumer whose first read that reaches offset SKIPPED leaves it
    out, as the client or broker of the chaos run's lost event must have."""

    def __init__(self, real: AIOKafkaConsumer) -> None:
        self._real = real
        self.skipped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0) -> Any:
        batches = await self._real.getmany(*partitions, timeout_ms=timeout_ms)
        if self.skipped:
            return batches
        for partition, records in list(batches.items()):
            kept = [r for r in records if r.offset != SKIPPED]
            if len(kept) < len(records):
                self.skipped = True
                if kept:
                    batches[partition] = kept
                else:  # as aiokafka answers: no partition without records
                    del batches[partition]
        return batches


class Recorder:
    def __init__(self, topic: str) -> None:
        self.group_id = f"hole-test-{uuid.uuid4().hex[:8]}"
        self.topics = (topic,)
        self.applied: list[int] = []
        self.last_applied = asyncio.Event()

    async def apply_batch(self, records: Sequence[Record]) -> dict[PartitionKey, int]:
        self.applied.extend(record.offset for record in records)
        if self.applied[-1] == RECORDS - 1:
            self.last_applied.set()
        return {}


async def committed_offset(kafka: KafkaEndpoint, group: str, topic: str) -> int | None:
    """The group's committed offset once it reaches the end (the commit follows the
    batch that applied the last record), or where it stopped after 10 s."""
    check = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await check.start()
    try:
        for _ in range(100):
            committed = await check.committed(TopicPartition(topic, 0))
            if committed == RECORDS:
                break
            await asyncio.sleep(0.1)
        return committed
    finally:
        await check.stop()


async def test_a_record_a_read_left_out_is_read_again_from_the_broker(
    kafka: KafkaEndpoint,
) -> None:
    topic = f"hole-test-{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        DATABASE_URL="sqlite+aiosqlite:///:memory:",
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DEALFLOW_JWT_SECRET="x" * 32,
        kafka_commit_interval_ms=0,
        kafka_topic_partitions=1,
        kafka_replication_factor=1,
    )
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=kafka.idempotence,
        linger_ms=5,  # in batches, so that the skipped record sits inside one
    )
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"%d" % n) for n in range(RECORDS)])
    finally:
        await producer.stop()

    recorder = Recorder(topic)
    metrics = ConsumerLoopMetrics(CollectorRegistry())
    skipping: list[SkipsOnce] = []

    class Loop(ConsumerLoop):
        def _build(self) -> AIOKafkaConsumer:
            skipping.append(SkipsOnce(super()._build()))
            return skipping[-1]  # type: ignore[return-value]

    async def connected() -> None:
        return None

    loop = Loop(recorder, settings, metrics, connected)  # type: ignore[arg-type]
    running = asyncio.create_task(loop.run())
    try:
        # Once the last record is applied, whatever was left out before it is either
        # applied by now or lost.
        await asyncio.wait_for(recorder.last_applied.wait(), 60)
        committed = await committed_offset(kafka, recorder.group_id, topic)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert skipping[0].skipped, "the read never reached the record it was to leave out"
    assert recorder.applied == list(range(RECORDS))
    assert metrics.offset_gaps.labels(recorder.group_id, "no")._value.get() == 1
    assert committed == RECORDS
