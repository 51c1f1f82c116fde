"""Replay topics from their first offset into an `EventConsumer`, outside any group.

A read model is rebuilt by applying every event again. This reads each partition of
the topics from its beginning until it has caught up with the partition's end, without
joining a consumer group, so nothing is committed and the live consumer's group keeps
its offsets: live and replay may run side by side, the inbox keeping each event to one
application (records appended meanwhile may be applied by either).

The end of a partition is the high watermark of the fetch responses, not only the
answer of ListOffsets: Tansu (the broker of `make run` and the tests) answers
ListOffsets(latest) with a count of record batches rather than the next offset when
the producer batched its records (seen: 40 records in 5 batches answered as 1), and
trusting it stopped a rebuild short of the last events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from dealflow_common.messaging.consumer import PartitionKey, Record
from dealflow_common.settings import ServiceSettings

log = logging.getLogger(__name__)

ApplyBatch = Callable[[Sequence[Record]], Awaitable[dict[PartitionKey, int]]]
Progress = Callable[[int, int], None]
"""(records read so far, records to read in all)"""


class ReplayStalled(Exception):
    """A partition's record could be neither applied nor set aside, attempt after attempt."""


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    records: int
    partitions: int


async def replay_from_beginning(
    settings: ServiceSettings,
    topics: Iterable[str],
    apply: ApplyBatch,
    *,
    progress: Progress | None = None,
    attempts: int = 5,
    pause: float = 1.0,
) -> ReplaySummary:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id=f"dealflow-{settings.service_name}-replay",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.kafka_consumer_batch_size,
    )
    await consumer.start()
    try:
        known = await consumer.topics()
        partitions = [
            TopicPartition(topic, number)
            for topic in sorted(set(topics))
            if topic in known
            for number in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return ReplaySummary(0, 0)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        remaining = {p for p in partitions if ends[p] > starts[p]}
        consumer.pause(*(set(partitions) - remaining))
        read, failures = 0, 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            records = [record for batch in batches.values() for record in batch]
            if records:
                not_done = await apply(records)
                if not_done:
                    failures += 1
                    if failures >= attempts:
                        raise ReplayStalled(
                            ", ".join(f"{k.topic}/{k.partition}@{o}" for k, o in not_done.items())
                        )
                    for key, offset in not_done.items():
                        consumer.seek(TopicPartition(key.topic, key.partition), offset)
                    await asyncio.sleep(pause)
                else:
                    failures = 0
                read += sum(
                    1
                    for r in records
                    if PartitionKey(r.topic, r.partition) not in not_done
                    or r.offset < not_done[PartitionKey(r.topic, r.partition)]
                )
            behind = 0
            for partition in list(remaining):
                end = max(ends[partition], consumer.highwater(partition) or 0)
                position = await consumer.position(partition)
                if position >= end:
                    remaining.discard(partition)
                    consumer.pause(partition)
                behind += max(0, end - position)
            if progress is not None:
                progress(read, read + behind)
        log.info("replayed %d records of %d partitions", read, len(partitions))
        return ReplaySummary(read, len(partitions))
    finally:
        await consumer.stop()
