"""Kafka wiring on aiokafka: topics, the producer of the relay and the dead letters, and
one consumer loop per `EventConsumer`.

Why aiokafka directly and not FastStream's subscriber: FastStream parses a batch (its
headers included) before our handler runs, and when that parsing raises, with manual
acks it neither applies nor rewinds the batch while aiokafka's position has moved on,
so the next batch's commit skips records that were never applied (seen here with a
null header value; FastStream issues 1459, 1967 and 2458 show the class). A loss-proof
consumer has to own the three things that decide it: what is parsed and how a record
that cannot be parsed is handled (`EventConsumer`), which offset is committed (only
past records applied or dead-lettered), and where the next read starts after anything
failed (a seek back to the first record not done). `ConsumerLoop` owns those and
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge

from dealflow_common.contracts.topics import dead_letter_topic
from dealflow_common.messaging.consumer import EventConsumer, PartitionKey
from dealflow_common.metrics import LoopCounter
from dealflow_common.settings import ServiceSettings

log = logging.getLogger(__name__)

LAG_REPORT_INTERVAL = 1.0
"""Seconds between two reports of a member's lag while it reads records (an idle member
reports at each empty poll). The lag is a gauge for dashboards; asking each partition's
position after every batch cost a task a partition (`wait_for`), about 10 µs each."""


async def ensure_topics(settings: ServiceSettings, topics: Iterable[str]) -> None:
    """Create each topic and its dead-letter topic if missing (idempotent)."""
    wanted = sorted({name for topic in topics for name in (topic, dead_letter_topic(topic))})
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id=f"dealflow-{settings.service_name}-admin",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return
        # Another replica may win the race to create them; that is fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        name=topic,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_replication_factor,
                    )
                    for topic in missing
                ]
            )
        log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()


@functools.lru_cache(maxsize=4096)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's `DefaultPartitioner` (the Java client's murmur2, so every producer puts
    a key in the same partition), with the hash of recent keys remembered: it is pure
    Python, about 10 µs a record, and an aggregate's events all carry its key."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[_key_hash(key) % len(all_partitions)]


class KafkaProducer:
    """The one producer of a service: the outbox relay's records and the dead letters.

    Every wait on the broker is bounded: `send` returns the broker's acknowledgement as
    a future the caller bounds, and `send_and_wait` raises `TimeoutError` after
    `kafka_request_timeout_ms`. A stalled broker then shows as a failure to retry, never
    as a task that hangs.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._timeout = settings.kafka_request_timeout_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._restarting = asyncio.Lock()
        self._wanted = False
        """Started and not stopped: a producer that died is to be replaced."""

    def _build(self) -> AIOKafkaProducer:
        settings = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            client_id=settings.kafka_client_id or f"dealflow-{settings.service_name}",
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            # No lingering: the relay queues a burst without yielding, so it travels as
            # one produce request anyway, and 5 ms of linger was 5 ms on every hop of
            # the accept saga.
            linger_ms=0,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            partitioner=partition_of_key,
        )

    async def start(self) -> None:
        producer = self._build()
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        self._wanted = True

    async def stop(self) -> None:
        self._wanted = False
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._timeout)

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def _running(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None and _sender_alive(producer):
            return producer
        if not self._wanted:
            raise ConnectionError("not connected to Kafka")
        return await self._replace(producer)

    async def _replace(self, dead: AIOKafkaProducer | None) -> AIOKafkaProducer:
        """A producer whose sender task died sends nothing ever again: build a new one.

        aiokafka's sender ends on an error it did not expect (a write to a connection
        the broker reset, aio-libs/aiokafka#907) and every later send fails; the
        records it held were not acked, so the relay sends them again.
        """
        async with self._restarting:
            current = self._producer
            if current is not None and current is not dead and _sender_alive(current):
                return current  # another caller replaced it meanwhile
            log.error("the Kafka producer stopped working; starting a new one")
            self._producer = None
            if dead is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dead.stop(), self._timeout)
            # A failure here leaves no producer; the next send tries again.
            async with asyncio.timeout(self._timeout):
                await self.start()
            assert self._producer is not None
            return self._producer

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]:
        """Queue one record; the returned future resolves when the broker acked it."""
        producer = await self._running()
        future: asyncio.Future[Any] = await producer.send(
            topic,
            value,
            key=key,
            headers=[(name, text.encode()) for name, text in headers.items()],
        )
        return future

    async def send_and_wait(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        async with asyncio.timeout(self._timeout):
            await (await self.send(topic, key, value, headers))

    async def answers(self, timeout: float) -> bool:
        """Whether the broker answers a metadata request within `timeout` seconds."""
        producer = self._producer
        if producer is None or not _sender_alive(producer):
            return False
        try:
            async with asyncio.timeout(timeout):
                await producer.client.fetch_all_metadata()
            return True
        except Exception:
            return False


def _sender_alive(producer: AIOKafkaProducer) -> bool:
    # aiokafka has no public "is this producer still working": its sender task is it.
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is None or not task.done()


class ConsumerLoopMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stalled = Gauge(
            "dealflow_consumer_stalled_partitions",
            "Partitions a consumer stopped reading because a record there could be "
            "neither applied nor dead-lettered (the dead-letter topic is unavailable)",
            ["group"],
            registry=registry,
        )
        self.rewinds = Counter(
            "dealflow_consumer_rewinds",
            "Batches read again from their first record after an unexpected failure",
            ["group"],
            registry=registry,
        )
        self.offset_gaps = Counter(
            "dealflow_consumer_offset_gaps",
            "Reads that skipped offsets the loop expected next; each is read again once "
            "from the first one skipped",
            ["group", "confirmed"],
            registry=registry,
        )
        self.batches = LoopCounter(
            "dealflow_consumer_batches",
            "Batches of records a consumer read, one fetch that found records each: "
            "events consumed per batch show how full the fetches are",
            ["group"],
            registry=registry,
        )
        self.lag = Gauge(
            "dealflow_consumer_lag",
            "Records on the broker not yet applied by this consumer, per group",
            ["group"],
            registry=registry,
        )


class ConsumerLoop:
    """Reads one consumer group's topics and commits only what `EventConsumer` finished.

    The guarantee, whatever fails: an offset is committed only past records that were
    applied or dead-lettered. After a batch, each partition's commit stops at the first
    record `apply_batch` reports as not done; that partition is read again from there
    after a pause. If anything raises (a bug, a lost connection), every partition of the
    batch is sought back to its first record and read again; the inbox makes re-reading
    harmless.

    What is done is committed at most every `kafka_commit_interval_ms`, and at once when
    the loop falls idle: an offset commit is a broker round trip per batch otherwise,
    and what a crash leaves uncommitted is only read again.

    A partition's offsets are read in order without holes. When a read starts past the
    offset that should come next, or skips offsets inside, the loop does not apply what
    follows the hole: it counts and logs it and reads the partition again from the
    first offset skipped. Only when the broker answers with the same hole again is it
    taken as real (offsets a compacted log or a transaction's markers leave out). A
    chaos run once lost one event of an uncompacted topic without a word: this turns
    such a loss into a second read, or at least into a warning naming the offsets.

    A `background` loop (one no request waits on) lets the broker hold its fetches
    longer and waits `kafka_background_linger_ms` after each batch that was not full,
    trading a fraction of a second of its latency for fewer, larger batches.
    """

    def __init__(
        self,
        consumer: EventConsumer[Any],
        settings: ServiceSettings,
        metrics: ConsumerLoopMetrics,
        connected: Callable[[], Awaitable[object]],
        *,
        background: bool = False,
    ) -> None:
        self.consumer = consumer
        self._settings = settings
        self._metrics = metrics
        self._connected = connected
        self._stall_pause = settings.consumer_stall_pause_ms / 1000
        self._paused_until: dict[TopicPartition, float] = {}
        self._fetch_max_wait_ms = (
            settings.kafka_background_fetch_max_wait_ms
            if background
            else settings.kafka_fetch_max_wait_ms
        )
        self._linger = settings.kafka_background_linger_ms / 1000 if background else 0.0
        self._batch_size = settings.kafka_consumer_batch_size
        self._batches_read = metrics.batches.labels(consumer.group_id)
        self._commit_interval = settings.kafka_commit_interval_ms / 1000
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._committed_at = 0.0
        self._lag_reported_at = 0.0
        self._next_offset: dict[TopicPartition, int] = {}
        """Per partition, the offset the next read should start at."""
        self._hole_read_again: dict[TopicPartition, tuple[int, int]] = {}
        """Per partition, a hole already read again once: its first offset, and the
        offset the read after it started at."""
        self._rebalances = 0
        """Counts revocations: an expectation formed across one is not kept."""
        self._start_timeout = 30 + settings.kafka_session_timeout_ms / 1000
        self.running = False

    @property
    def stalled_partitions(self) -> int:
        return len(self._paused_until)

    def _build(self) -> AIOKafkaConsumer:
        settings = self._settings
        kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            client_id=settings.kafka_client_id or f"dealflow-{settings.service_name}",
            group_id=self.consumer.group_id,
            enable_auto_commit=False,
            # A new group reads from the start, so a service deployed after others have
            # published still sees every event.
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_poll_records=settings.kafka_consumer_batch_size,
            # Not kafka_request_timeout_ms: a group join is held by the broker for up to
            # the rebalance time, so the consumer keeps aiokafka's longer default.
        )
        kafka.subscribe(list(self.consumer.topics), listener=_ForgetRevoked(self))
        return kafka

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions another member may read now: where it stops is not ours to expect."""
        self._rebalances += 1
        for partition in partitions:
            self._next_offset.pop(partition, None)
            self._hole_read_again.pop(partition, None)

    async def run(self) -> None:
        """Consume until cancelled, reconnecting with a growing delay after failures."""
        await self._connected()
        delay = 0.5
        while True:
            kafka = self._build()
            try:
                # Bounded: a start that hangs on a half-open connection is retried.
                async with asyncio.timeout(self._start_timeout):
                    await kafka.start()
                self.running = True
                delay = 0.5
                await self._consume(kafka)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "consumer %s lost Kafka (%r); reconnecting in %.1fs",
                    self.consumer.group_id,
                    error,
                    delay,
                )
            finally:
                self.running = False
                self._paused_until.clear()
                self._metrics.stalled.labels(self.consumer.group_id).set(0)
                with contextlib.suppress(Exception):
                    # What is applied and not yet committed: a failure here only means
                    # it is read again.
                    await asyncio.wait_for(asyncio.shield(self._flush(kafka)), 5)
                self._uncommitted.clear()
                self._next_offset.clear()
                self._hole_read_again.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(kafka.stop(), 10)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _consume(self, kafka: AIOKafkaConsumer) -> None:
        group = self.consumer.group_id
        self._committed_at = time.monotonic()
        while True:
            self._resume_due(kafka)
            batches = await kafka.getmany(timeout_ms=1000)
            if not batches:
                await self._flush(kafka)
                await self._report_lag(kafka)
                continue
            batches = self._without_holes(kafka, batches)
            if not batches:
                continue
            records = [record for partition in batches.values() for record in partition]
            self._batches_read.inc()
            # A revocation while the batch is applied (aiokafka's coordinator runs
            # meanwhile) forgets expectations this batch must not write back.
            rebalances = self._rebalances
            try:
                not_done = await self.consumer.apply_batch(records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s failed a batch; reading it again", group)
                self._metrics.rewinds.labels(group).inc()
                assigned = kafka.assignment()
                for partition, read in batches.items():
                    # A partition lost in a rebalance meanwhile is read by its new owner
                    # from the committed offset, which is behind this batch.
                    if partition in assigned:
                        self._seek(kafka, partition, read[0].offset, rebalances)
                await asyncio.sleep(self._stall_pause)
                continue
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for partition, read in batches.items():
                stop = not_done.get(PartitionKey(partition.topic, partition.partition))
                if stop is None:
                    offsets[partition] = OffsetAndMetadata(read[-1].offset + 1, "")
                    self._expect(partition, read[-1].offset + 1, rebalances)
                    continue
                if stop > read[0].offset:
                    offsets[partition] = OffsetAndMetadata(stop, "")
                self._stall(kafka, partition, stop, rebalances)
            self._uncommitted.update(offsets)
            now = time.monotonic()
            if now - self._committed_at >= self._commit_interval:
                await self._flush(kafka)
            if now - self._lag_reported_at >= LAG_REPORT_INTERVAL:
                await self._report_lag(kafka)
            # A full batch means more is waiting: lingering then only adds to the lag.
            if self._linger and len(records) < self._batch_size:
                await asyncio.sleep(self._linger)

    def _stall(
        self, kafka: AIOKafkaConsumer, partition: TopicPartition, offset: int, rebalances: int
    ) -> None:
        if partition not in kafka.assignment():
            return  # its new owner reads it from the committed offset, at or before this one
        log.error(
            "consumer %s stops reading %s/%d at offset %d: the record there could be "
            "neither applied nor dead-lettered; trying again in %.0fs",
            self.consumer.group_id,
            partition.topic,
            partition.partition,
            offset,
            self._stall_pause,
        )
        self._seek(kafka, partition, offset, rebalances)
        kafka.pause(partition)
        self._paused_until[partition] = time.monotonic() + self._stall_pause
        self._metrics.stalled.labels(self.consumer.group_id).set(len(self._paused_until))

    def _seek(
        self, kafka: AIOKafkaConsumer, partition: TopicPartition, offset: int, rebalances: int
    ) -> None:
        kafka.seek(partition, offset)
        self._expect(partition, offset, rebalances)

    def _expect(self, partition: TopicPartition, offset: int, rebalances: int) -> None:
        """The next read of `partition` starts at `offset`, unless a revocation came
        since the batch was read: then another member may have the partition now, and
        where it leaves off is its own."""
        if rebalances == self._rebalances:
            self._next_offset[partition] = offset

    def _without_holes(
        self, kafka: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """The batch cut at the first hole in each partition's offsets; a partition cut
        is read again from the hole's first offset, once per hole.

        A read that starts before the expected offset is no hole: after a rebalance a
        partition is read from its committed offset, and the inbox skips what it
        applied. A revoked partition's expectation is forgotten (`_ForgetRevoked`), so
        when it comes back, what another member committed meanwhile is no hole either.
        """
        whole: dict[TopicPartition, list[Any]] = {}
        for partition, read in batches.items():
            if not read:
                continue
            expected = self._next_offset.get(partition, read[0].offset)
            cut = len(read)
            for n, record in enumerate(read):
                if record.offset > expected and not self._hole_is_known(
                    partition, expected, record.offset
                ):
                    cut = n
                    break
                expected = record.offset + 1
            if cut < len(read):
                self._read_hole_again(kafka, partition, expected, read[cut].offset)
            elif partition in self._hole_read_again:
                # Read again past the hole, and filled: forgotten, so that a later read
                # (after a rewind) that misses the same offset is read again too.
                del self._hole_read_again[partition]
            if cut:
                whole[partition] = read[:cut]
        return whole

    def _hole_is_known(self, partition: TopicPartition, first_missing: int, got: int) -> bool:
        """True when this hole was read again once and the broker left it as it was: the
        same first offset missing, and nothing of it filled since."""
        known = self._hole_read_again.get(partition)
        if known is None or known[0] != first_missing or got < known[1]:
            return False
        del self._hole_read_again[partition]
        log.warning(
            "consumer %s: %s/%d has no record at offset %d on a second read either; "
            "going on past it",
            self.consumer.group_id,
            partition.topic,
            partition.partition,
            first_missing,
        )
        self._metrics.offset_gaps.labels(self.consumer.group_id, "yes").inc()
        return True

    def _read_hole_again(
        self, kafka: AIOKafkaConsumer, partition: TopicPartition, first_missing: int, got: int
    ) -> None:
        log.warning(
            "consumer %s: a read of %s/%d skipped offsets %d to %d; reading again from %d",
            self.consumer.group_id,
            partition.topic,
            partition.partition,
            first_missing,
            got - 1,
            first_missing,
        )
        self._metrics.offset_gaps.labels(self.consumer.group_id, "no").inc()
        self._hole_read_again[partition] = (first_missing, got)
        if partition in kafka.assignment():
            self._seek(kafka, partition, first_missing, self._rebalances)

    def _resume_due(self, kafka: AIOKafkaConsumer) -> None:
        if not self._paused_until:
            return
        now = time.monotonic()
        assigned = kafka.assignment()
        for partition, until in list(self._paused_until.items()):
            if partition not in assigned:
                # Another member owns it now and reads it from the committed offset.
                del self._paused_until[partition]
            elif until <= now:
                kafka.resume(partition)
                del self._paused_until[partition]
        self._metrics.stalled.labels(self.consumer.group_id).set(len(self._paused_until))

    async def _flush(self, kafka: AIOKafkaConsumer) -> None:
        """Commit what is done and not committed yet."""
        done, self._uncommitted = self._uncommitted, {}
        self._committed_at = time.monotonic()
        # A partition lost in a rebalance meanwhile is its new owner's to commit: it
        # reads again from the committed offset, and its inbox skips what was applied.
        assigned = kafka.assignment()
        offsets = {partition: at for partition, at in done.items() if partition in assigned}
        if not offsets:
            return
        try:
            await kafka.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # The group rebalanced while we worked, or the coordinator is away: the
            # records are applied, so at worst they are read again (by us or by the
            # new owner) and the inbox skips them. A later commit covers these offsets.
            log.warning("offset commit failed: %r", error)

    async def _report_lag(self, kafka: AIOKafkaConsumer) -> None:
        self._lag_reported_at = time.monotonic()
        lag = 0
        for partition in kafka.assignment():
            highwater = kafka.highwater(partition)
            if highwater is None:
                continue
            with contextlib.suppress(Exception):
                position = await asyncio.wait_for(kafka.position(partition), 0.5)
                lag += max(0, highwater - position)
        self._metrics.lag.labels(self.consumer.group_id).set(lag)


class _ForgetRevoked(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forgets the expected offsets of revoked partitions: if one comes back, its
    committed offset may be past them, and that is no hole to read again."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._loop.forget(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None


async def connect_with_retry(
    producer: KafkaProducer,
    settings: ServiceSettings,
    topics: Iterable[str],
    connected: asyncio.Event,
) -> None:
    """Create the topics and start the producer, retrying while Kafka is away, so that
    HTTP serves (and the outbox fills) in the meantime."""
    topics = list(topics)
    delay = 0.5
    while True:
        try:
            if settings.kafka_create_topics:
                await ensure_topics(settings, topics)
            await producer.start()
            connected.set()
            log.info("connected to Kafka at %s", settings.kafka_bootstrap_servers)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("Kafka not available (%r); retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
