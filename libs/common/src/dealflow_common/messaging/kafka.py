"""Kafka wiring on FastStream: the broker, topics, the relay's sender, subscriptions.

Every subscription states its consumer group and `AckPolicy.MANUAL`: FastStream's
Kafka default (`ACK_FIRST`) commits before the handler runs, `ACK` commits even when
it raised, and `NACK_ON_ERROR` re-reads at once in a tight loop. Here the offset is
committed only after `EventConsumer.apply_batch` returns, which is after the inbox
transaction committed or the event was dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage

from dealflow_common.contracts.topics import dead_letter_topic
from dealflow_common.messaging.consumer import EventConsumer
from dealflow_common.settings import ServiceSettings

log = logging.getLogger(__name__)


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id=settings.kafka_client_id or f"dealflow-{settings.service_name}",
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        # A few ms of lingering lets the relay's burst travel as one produce request.
        linger_ms=5,
        graceful_timeout=15.0,
        # Per-message lines at INFO cost more than the work at our rates; and FastStream's
        # own logger would print coloured text past our JSON formatter.
        log_level=logging.DEBUG,
        logger=logging.getLogger("faststream.dealflow"),
    )


async def ensure_topics(settings: ServiceSettings, topics: Iterable[str]) -> None:
    """Create each topic and its dead-letter topic if missing (idempotent)."""
    wanted = sorted({name for topic in topics for name in (topic, dead_letter_topic(topic))})
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id=f"dealflow-{settings.service_name}-admin",
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


class BrokerSender:
    """The relay's and the dead-letter path's way to send records through FastStream."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def __call__(
        self, topic: str, key: bytes, value: bytes, headers: dict[str, str], correlation_id: str
    ) -> Awaitable[Any]:
        return await self._broker.publish(
            value,
            topic,
            key=key,
            headers=headers,
            correlation_id=correlation_id,
            no_confirm=True,
        )

    async def send_and_wait(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        await self._broker.publish(value, topic, key=key, headers=headers)


async def _skip_decoding(message: StreamMessage[Any]) -> None:
    # The consumer parses the CloudEvents envelope itself (one bad record must not
    # fail the batch), so FastStream's own JSON decoding would be wasted work.
    return None


def subscribe(broker: KafkaBroker, consumer: EventConsumer[Any], settings: ServiceSettings) -> None:
    subscriber = broker.subscriber(
        *consumer.topics,
        group_id=consumer.group_id,
        batch=True,
        max_records=settings.kafka_consumer_batch_size,
        ack_policy=AckPolicy.MANUAL,
        # A new group reads from the start, so a service deployed after others have
        # published still sees every event.
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        decoder=_skip_decoding,
        title=f"{consumer.group_id}:apply",
        description="Applies " + ", ".join(consumer.handled_types),
    )

    @subscriber
    async def apply_events(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        await consumer.apply_batch(records)
        try:
            await msg.ack()
        except CommitFailedError as error:
            # The group rebalanced while we worked; the new owner re-reads these
            # records and the inbox skips them.
            log.warning("offset commit failed after a rebalance: %r", error)


async def connect_with_retry(
    broker: KafkaBroker, settings: ServiceSettings, topics: Iterable[str], connected: asyncio.Event
) -> None:
    """Start the broker, retrying while Kafka is away, so HTTP serves in the meantime."""
    topics = list(topics)
    delay = 0.5
    while True:
        try:
            if settings.kafka_create_topics:
                await ensure_topics(settings, topics)
            await broker.start()
            connected.set()
            log.info("connected to Kafka at %s", settings.kafka_bootstrap_servers)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("Kafka not available (%r); retrying in %.1fs", error, delay)
            try:
                await broker.stop()
            except Exception:  # pragma: no cover - best effort cleanup
                log.debug("broker stop after failed start", exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
