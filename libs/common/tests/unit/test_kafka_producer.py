"""A producer whose sender died is replaced, so the relay publishes again without a
restart of the process (aiokafka's sender ends for good on an unexpected error)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dealflow_common.messaging.kafka import KafkaProducer
from dealflow_common.settings import ServiceSettings


class FakeSender:
    def __init__(self) -> None:
        self.sender_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class FakeAioProducer:
    """aiokafka's producer as KafkaProducer uses it; `die()` ends its sender task."""

    built: list[FakeAioProducer] = []

    def __init__(self) -> None:
        self._sender = FakeSender()
        self.sent: list[bytes] = []
        self.stopped = False
        FakeAioProducer.built.append(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def die(self) -> None:
        self._sender.sender_task.set_exception(RuntimeError("the handler is closed"))
        self._sender.sender_task.exception()

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


def producer() -> KafkaProducer:
    settings = ServiceSettings(
        DATABASE_URL="sqlite+aiosqlite:///unused.db",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DEALFLOW_JWT_SECRET="x" * 32,
    )
    kafka = KafkaProducer(settings)
    kafka._build = FakeAioProducer  # type: ignore[method-assign,assignment]
    return kafka


async def test_a_producer_whose_sender_died_is_replaced_on_the_next_send() -> None:
    FakeAioProducer.built.clear()
    kafka = producer()
    await kafka.start()
    first = FakeAioProducer.built[0]
    await kafka.send_and_wait("t", b"k", b"one", {})
    first.die()
    assert not await kafka.answers(timeout=0.1), "readiness says the producer is away"
    await kafka.send_and_wait("t", b"k", b"two", {})
    second = FakeAioProducer.built[1]
    assert (first.sent, second.sent, first.stopped) == ([b"one"], [b"two"], True)


async def test_a_stopped_producer_is_not_brought_back() -> None:
    FakeAioProducer.built.clear()
    kafka = producer()
    await kafka.start()
    await kafka.stop()
    with pytest.raises(ConnectionError):
        await kafka.send_and_wait("t", b"k", b"late", {})
    assert len(FakeAioProducer.built) == 1


def test_keys_go_to_the_partition_the_default_partitioner_gives() -> None:
    """The same partition as aiokafka's (and the Java client's) partitioner, remembered
    hash or not: the first call per key computes it, the second reads it back."""
    from aiokafka.partitioner import DefaultPartitioner

    from dealflow_common.messaging.kafka import partition_of_key

    for n in range(200):
        key = f"deal-{n}".encode()
        for count in (1, 2, 3, 6, 12):
            partitions = list(range(count))
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert partition_of_key(key, partitions, partitions) == expected
            assert partition_of_key(key, partitions, partitions) == expected
    assert partition_of_key(None, [0, 1, 2], [1]) == 1  # no key: any available partition
