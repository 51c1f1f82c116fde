"""Replay from offset 0 on the real broker: every record, in order per partition, once
past a failure, even when the producer batched records (Tansu's ListOffsets then
answers short of the end; see messaging/replay.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dealflow_common.messaging.consumer import PartitionKey, Record
from dealflow_common.messaging.replay import replay_from_beginning
from dealflow_common.settings import ServiceSettings
from dealflow_common.testing import KafkaEndpoint


async def test_a_replay_reads_every_batched_record_once_in_order(kafka: KafkaEndpoint) -> None:
    topic = f"replay-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=kafka.idempotence,
        linger_ms=5,  # records travel in batches, as the outbox relay sends them
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, b"%d" % n, key=b"%d" % (n % 5)) for n in range(60)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    applied: dict[int, list[int]] = defaultdict(list)
    failed_once: set[int] = set()

    async def apply(records: Sequence[Record]) -> dict[PartitionKey, int]:
        not_done: dict[PartitionKey, int] = {}
        for record in records:
            key = PartitionKey(record.topic, record.partition)
            if key in not_done:
                continue
            if record.offset == 3 and record.partition not in failed_once:
                failed_once.add(record.partition)
                not_done[key] = record.offset  # neither applied nor set aside: read again
                continue
            applied[record.partition].append(record.offset)
        return not_done

    settings = ServiceSettings(
        DATABASE_URL="sqlite+aiosqlite:///:memory:",
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DEALFLOW_JWT_SECRET="x" * 32,
    )
    summary = await replay_from_beginning(settings, [topic], apply, pause=0.01)

    assert summary.records == 60
    assert sum(len(offsets) for offsets in applied.values()) == 60
    for offsets in applied.values():
        assert offsets == list(range(len(offsets)))
