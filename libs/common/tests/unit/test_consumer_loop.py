"""The consumer loop commits only past records that were applied or dead-lettered,
whatever fails; it reads a batch again from its first record after any failure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from dealflow_common.messaging.consumer import PartitionKey
from dealflow_common.messaging.kafka import ConsumerLoop, ConsumerLoopMetrics
from dealflow_common.settings import ServiceSettings

TOPIC = "dealflow.opportunity.events"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: Sequence[tuple[str, bytes | None]] = ()


class FakeKafka:
    """aiokafka's consumer as the loop uses it: a log per partition and a position."""

    def __init__(
        self,
        logs: dict[TopicPartition, int],
        per_poll: int | None = None,
        *,
        skipped_once: set[tuple[TopicPartition, int]] = frozenset(),  # type: ignore[assignment]
        absent: set[tuple[TopicPartition, int]] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.end = dict(logs)
        self.skipped_once = set(skipped_once)
        """Offsets the first read that reaches them leaves out (a client or broker fault)."""
        self.absent = set(absent)
        """Offsets the log does not hold (compacted away, or a transaction's marker)."""
        self.position_of = dict.fromkeys(logs, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.commits = 0
        self.paused_partitions: set[TopicPartition] = set()
        self.polls = 0
        self.per_poll = per_poll
        """At most this many records of a partition per poll (None: all there are)."""

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Rec]]:
        self.polls += 1
        if self.polls > 20:
            raise asyncio.CancelledError  # end the test's loop
        batch = {}
        for tp, end in self.end.items():
            if tp in self.paused_partitions or self.position_of[tp] >= end:
                continue
            if self.per_poll is not None:
                end = min(end, self.position_of[tp] + self.per_poll)
            offsets = [o for o in range(self.position_of[tp], end) if (tp, o) not in self.absent]
            dropped = {(tp, o) for o in offsets} & self.skipped_once
            self.skipped_once -= dropped
            batch[tp] = [Rec(tp.topic, tp.partition, o) for o in offsets if (tp, o) not in dropped]
            self.position_of[tp] = end
        if not batch:
            await asyncio.sleep(timeout_ms / 1000 / 200)  # the broker's wait, shortened
        return batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_of[tp] = offset

    def pause(self, tp: TopicPartition) -> None:
        self.paused_partitions.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused_partitions.discard(tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self.end)

    def highwater(self, tp: TopicPartition) -> int:
        return self.end[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits += 1
        for tp, meta in offsets.items():
            assert meta.offset >= self.committed.get(tp, 0), "a commit never goes back"
            self.committed[tp] = meta.offset


@dataclass
class ScriptedConsumer:
    """Stands for EventConsumer: answers each batch from a script, records what it saw."""

    answers: list[Any]
    seen: list[list[tuple[int, int]]] = field(default_factory=list)
    group_id: str = "test-group"
    topics: tuple[str, ...] = (TOPIC,)

    async def apply_batch(self, records: Sequence[Rec]) -> dict[PartitionKey, int]:
        self.seen.append([(r.partition, r.offset) for r in records])
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, BaseException):
            raise answer
        return dict(answer)


def loop_for(
    consumer: ScriptedConsumer,
    stall_pause_ms: int = 10,
    *,
    commit_interval_ms: int = 0,
    background: bool = False,
) -> ConsumerLoop:
    settings = ServiceSettings(
        DATABASE_URL="sqlite+aiosqlite:///unused.db",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET="x" * 32,
        consumer_stall_pause_ms=stall_pause_ms,
        kafka_commit_interval_ms=commit_interval_ms,
        kafka_background_linger_ms=30,
    )

    async def connected() -> None:
        return None

    return ConsumerLoop(
        consumer,  # type: ignore[arg-type]
        settings,
        ConsumerLoopMetrics(CollectorRegistry()),
        connected,
        background=background,
    )


async def drive(loop: ConsumerLoop, kafka: FakeKafka) -> None:
    with pytest.raises(asyncio.CancelledError):
        await loop._consume(kafka)  # type: ignore[arg-type]


async def test_a_batch_that_fails_anywhere_is_read_again_and_not_committed_past() -> None:
    # The failure FastStream's batch parser caused: the batch neither applied nor
    # rewound, and the next commit skipped it. Here the batch is read again.
    kafka = FakeKafka({P0: 3, P1: 2})
    consumer = ScriptedConsumer([AttributeError("'NoneType' object has no attribute 'decode'")])
    await drive(loop_for(consumer), kafka)
    first, second = consumer.seen[:2]
    assert sorted(first) == sorted(second) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert kafka.committed == {P0: 3, P1: 2}


async def test_a_partition_stops_at_the_first_record_not_done_and_is_read_again_later() -> None:
    kafka = FakeKafka({P0: 5, P1: 2})
    consumer = ScriptedConsumer([{PartitionKey(TOPIC, 0): 3}])
    loop = loop_for(consumer, stall_pause_ms=20)
    await drive(loop, kafka)
    # The commit of partition 0 stopped at offset 3 until offsets 3 and 4 were read
    # again and done; partition 1 went on.
    assert sorted(consumer.seen[0]) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1)]
    assert [(0, 3), (0, 4)] in consumer.seen[1:]
    assert kafka.committed == {P0: 5, P1: 2}


async def test_a_stalled_partition_is_reported_until_it_is_read_again() -> None:
    kafka = FakeKafka({P0: 2})
    consumer = ScriptedConsumer([{PartitionKey(TOPIC, 0): 0}])
    loop = loop_for(consumer, stall_pause_ms=60_000)
    await drive(loop, kafka)
    assert kafka.committed == {}
    assert P0 in kafka.paused_partitions
    assert loop.stalled_partitions == 1


async def test_offsets_are_committed_once_per_interval_and_when_the_loop_falls_idle() -> None:
    # Four batches inside one long interval: one commit, when no record is left to read,
    # and it covers all four.
    kafka = FakeKafka({P0: 4}, per_poll=1)
    consumer = ScriptedConsumer([])
    await drive(loop_for(consumer, commit_interval_ms=60_000), kafka)
    assert len(consumer.seen) == 4
    assert kafka.commits == 1
    assert kafka.committed == {P0: 4}


async def test_without_an_interval_every_batch_is_committed() -> None:
    kafka = FakeKafka({P0: 3}, per_poll=1)
    await drive(loop_for(ScriptedConsumer([]), commit_interval_ms=0), kafka)
    assert kafka.commits == 3
    assert kafka.committed == {P0: 3}


async def test_a_commit_held_back_never_passes_a_record_not_done() -> None:
    # Offset 2 cannot be finished: whatever the interval holds back, the commit that
    # finally goes out stops before it.
    kafka = FakeKafka({P0: 4}, per_poll=2)
    consumer = ScriptedConsumer([{}, {PartitionKey(TOPIC, 0): 2}])
    await drive(loop_for(consumer, stall_pause_ms=60_000, commit_interval_ms=60_000), kafka)
    assert kafka.committed == {P0: 2}


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The loop's sleeps, recorded and not slept."""
    from dealflow_common.messaging import kafka as kafka_module

    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(kafka_module.asyncio, "sleep", recording_sleep)
    return recorded


async def test_a_background_loop_waits_after_each_batch_and_a_live_one_does_not(
    slept: list[float],
) -> None:
    await drive(loop_for(ScriptedConsumer([]), background=True), FakeKafka({P0: 3}, per_poll=1))
    assert slept.count(0.03) == 3  # the linger, once after each of the three batches
    slept.clear()
    await drive(loop_for(ScriptedConsumer([])), FakeKafka({P0: 3}, per_poll=1))
    assert 0.03 not in slept


async def test_a_background_loop_reads_again_at_once_after_a_full_batch(
    slept: list[float],
) -> None:
    loop = loop_for(ScriptedConsumer([]), background=True)
    loop._batch_size = 2
    # Five records, two a poll: two full batches, then one of a single record.
    await drive(loop, FakeKafka({P0: 5}, per_poll=2))
    assert slept.count(0.03) == 1  # only after the batch that was not full


async def test_each_batch_read_is_counted_for_its_group() -> None:
    loop = loop_for(ScriptedConsumer([]))
    await drive(loop, FakeKafka({P0: 5}, per_poll=2))
    assert loop._metrics.batches.labels("test-group").value == 3


def offset_gaps(loop: ConsumerLoop, confirmed: str) -> float:
    return loop._metrics.offset_gaps.labels("test-group", confirmed)._value.get()


async def test_a_record_a_read_skipped_is_read_again_before_anything_after_it() -> None:
    kafka = FakeKafka({P0: 5, P1: 2}, skipped_once={(P0, 2)})
    consumer = ScriptedConsumer([])
    loop = loop_for(consumer)
    await drive(loop, kafka)
    # Offsets 3 and 4 wait for 2: the partition is read again from the hole.
    assert sorted(consumer.seen[0]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert consumer.seen[1] == [(0, 2), (0, 3), (0, 4)]
    assert kafka.committed == {P0: 5, P1: 2}
    assert offset_gaps(loop, "no") == 1
    assert offset_gaps(loop, "yes") == 0


async def test_a_read_that_starts_past_the_next_offset_is_read_again_from_it() -> None:
    kafka = FakeKafka({P0: 4}, per_poll=2, skipped_once={(P0, 2)})
    consumer = ScriptedConsumer([])
    await drive(loop_for(consumer), kafka)
    assert consumer.seen[:2] == [[(0, 0), (0, 1)], [(0, 2), (0, 3)]]
    assert kafka.committed == {P0: 4}


async def test_a_hole_the_broker_answers_again_is_gone_past_after_one_more_read() -> None:
    # What a compacted log leaves out is not there to be read: the loop must not wait
    # for it forever.
    kafka = FakeKafka({P0: 5}, absent={(P0, 2)})
    consumer = ScriptedConsumer([])
    loop = loop_for(consumer)
    await drive(loop, kafka)
    assert consumer.seen[:2] == [[(0, 0), (0, 1)], [(0, 3), (0, 4)]]
    assert kafka.committed == {P0: 5}
    assert (offset_gaps(loop, "no"), offset_gaps(loop, "yes")) == (1, 1)


async def test_a_partition_read_again_from_before_the_next_offset_is_no_hole() -> None:
    # After a rebalance a partition is read from its committed offset, behind what this
    # member applied; the inbox skips what is read twice.
    kafka = FakeKafka({P0: 3})
    consumer = ScriptedConsumer([AttributeError("read it again")])
    loop = loop_for(consumer)
    await drive(loop, kafka)
    assert consumer.seen[:2] == [[(0, 0), (0, 1), (0, 2)]] * 2
    assert offset_gaps(loop, "no") == 0


def test_a_partition_that_comes_back_after_a_rebalance_is_read_from_its_committed_offset() -> None:
    # While another member owned partition 0 it applied and committed up to 10: this
    # member's expectation (3) died with the revocation, so 10 is no hole.
    loop = loop_for(ScriptedConsumer([]))
    kafka = FakeKafka({P0: 12})
    loop._next_offset[P0] = 3
    loop.forget([P0])
    read = {P0: [Rec(TOPIC, 0, 10), Rec(TOPIC, 0, 11)]}
    assert loop._without_holes(kafka, read) == read  # type: ignore[arg-type]
    assert offset_gaps(loop, "no") == 0
    # Not forgotten, the same read would be a hole, read again from 3.
    loop._next_offset[P0] = 3
    assert loop._without_holes(kafka, read) == {}  # type: ignore[arg-type]
    assert kafka.position_of[P0] == 3


async def test_a_partition_stalled_inside_a_batch_is_no_hole_when_resumed() -> None:
    # Offsets 0-1 applied (next: 2), then the batch 2-3 stops at 3: the stall's seek is
    # the new expectation, so reading 3 again is no hole.
    kafka = FakeKafka({P0: 6}, per_poll=2)
    consumer = ScriptedConsumer([{}, {PartitionKey(TOPIC, 0): 3}])
    loop = loop_for(consumer, stall_pause_ms=10)
    await drive(loop, kafka)
    assert [(0, 3), (0, 4)] in consumer.seen[2:]
    assert kafka.committed == {P0: 6}
    assert offset_gaps(loop, "no") == 0


async def test_a_revocation_while_a_batch_is_applied_leaves_no_expectation_behind() -> None:
    # aiokafka revokes from its coordinator task, possibly while the batch is applied;
    # the batch must not write back an expectation for a partition another member may
    # carry on with.
    loop: ConsumerLoop

    class RevokedMeanwhile(ScriptedConsumer):
        async def apply_batch(self, records: Sequence[Rec]) -> dict[PartitionKey, int]:
            loop.forget([P0])
            return await super().apply_batch(records)

    kafka = FakeKafka({P0: 3})
    loop = loop_for(RevokedMeanwhile([]))
    await drive(loop, kafka)
    assert P0 not in loop._next_offset
    # Back after the other member applied up to 10: no hole.
    read = {P0: [Rec(TOPIC, 0, 10)]}
    assert loop._without_holes(kafka, read) == read  # type: ignore[arg-type]


async def test_a_hole_partly_filled_on_the_second_read_is_read_again() -> None:
    loop = loop_for(ScriptedConsumer([]))
    kafka = FakeKafka({P0: 12})
    loop._next_offset[P0] = 0
    assert loop._without_holes(kafka, {P0: [Rec(TOPIC, 0, 5)]}) == {}  # type: ignore[arg-type]
    # The second read answers differently (3 is there now): not the same hole.
    assert loop._without_holes(kafka, {P0: [Rec(TOPIC, 0, 3)]}) == {}  # type: ignore[arg-type]
    assert kafka.position_of[P0] == 0
    # The same answer twice: gone past.
    read = {P0: [Rec(TOPIC, 0, 3)]}
    assert loop._without_holes(kafka, read) == read  # type: ignore[arg-type]
    assert (offset_gaps(loop, "no"), offset_gaps(loop, "yes")) == (2, 1)


async def test_the_loop_listens_for_revocations_of_its_partitions() -> None:
    from dealflow_common.messaging.kafka import _ForgetRevoked

    kafka = loop_for(ScriptedConsumer([]))._build()
    try:
        assert isinstance(kafka._subscription.listener, _ForgetRevoked)
        assert kafka._subscription.subscription.topics == {TOPIC}
    finally:
        await kafka.stop()
