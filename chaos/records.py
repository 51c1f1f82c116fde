"""Everything on the event topics and their dead-letter topics, read from offset 0.

One plain Kafka client (no consumer group), as any subscriber would use, runs for the
whole session and keeps every record. The checker asks it to catch up with the end
offsets before judging; the load client asks it when a deal is won or lost, which
costs the services no HTTP call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from dealflow_common.contracts.topics import (
    OPPORTUNITY_EVENTS,
    ORDER_EVENTS,
    QUOTE_EVENTS,
    dead_letter_topic,
)

EVENT_TOPICS = (OPPORTUNITY_EVENTS, QUOTE_EVENTS, ORDER_EVENTS)
DEAD_LETTER_TOPICS = tuple(dead_letter_topic(t) for t in EVENT_TOPICS)
OUTCOMES = {"opportunity.won": "won", "opportunity.lost": "lost"}


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    event: dict[str, Any] | None
    """The parsed CloudEvent, or None when the value is not a JSON object."""

    @property
    def subject(self) -> str | None:
        return str(self.event["subject"]) if self.event and "subject" in self.event else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:
                return value.decode(errors="replace")
        return None


def _parse(value: bytes | None) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class KafkaLog:
    def __init__(self, bootstrap_servers: str) -> None:
        self._consumer = AIOKafkaConsumer(
            *EVENT_TOPICS,
            *DEAD_LETTER_TOPICS,
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            client_id="chaos-log",
        )
        self.records: list[Record] = []
        self._outcomes: dict[str, str] = {}
        self._waiting: dict[str, list[asyncio.Future[str]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._consumer.stop(), 10)

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                for r in batch:
                    self._keep(
                        Record(
                            r.topic,
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            tuple(r.headers),
                            _parse(r.value) if not r.topic.endswith(".dlq") else None,
                        )
                    )

    def _keep(self, record: Record) -> None:
        self.records.append(record)
        event = record.event
        if event is None or record.topic != OPPORTUNITY_EVENTS:
            return
        outcome = OUTCOMES.get(str(event.get("type")))
        subject = record.subject
        if outcome is None or subject is None or subject in self._outcomes:
            return
        self._outcomes[subject] = outcome
        for future in self._waiting.pop(subject, []):
            if not future.done():
                future.set_result(outcome)

    async def outcome(self, opportunity_id: str, timeout: float) -> str | None:
        """'won' or 'lost' once the opportunity's first such event is read; None at timeout."""
        if opportunity_id in self._outcomes:
            return self._outcomes[opportunity_id]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[opportunity_id].append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None

    async def catch_up(self, timeout: float = 30.0) -> bool:
        """Read up to the end offsets of now; False if that took longer than `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in (*EVENT_TOPICS, *DEAD_LETTER_TOPICS)
                for p in (self._consumer.partitions_for_topic(topic) or ())
            ]
            ends = await asyncio.wait_for(self._consumer.end_offsets(partitions), timeout)
            while loop.time() < deadline:
                positions = [await self._consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    return True
                await asyncio.sleep(0.1)
        except Exception:  # the broker is away: not caught up
            return False
        return False

    def partitions(self, topic: str) -> set[int]:
        return set(self._consumer.partitions_for_topic(topic) or ())

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await asyncio.wait_for(self._consumer.end_offsets(partitions), 30))

    def events(self, topics: tuple[str, ...] = EVENT_TOPICS) -> list[Record]:
        return [r for r in self.records if r.topic in topics]

    def dead_letters(self) -> list[Record]:
        return [r for r in self.records if r.topic in DEAD_LETTER_TOPICS]
