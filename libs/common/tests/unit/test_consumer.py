"""The inbox consumer applies each event once, dead-letters what it cannot apply,
and waits out a database outage instead of dropping events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.messaging.consumer import (
    BatchPreparation,
    ChangesNothing,
    ConsumerMetrics,
    EventConsumer,
    IncomingEvent,
    PartitionKey,
)
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.messaging.tables import inbox, outbox
from dealflow_common.uow import UnitOfWork

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TOPIC = "dealflow.opportunity.events"

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(100), nullable=False),
    Column("text", String(200), nullable=False),
)


@pytest.fixture(autouse=True)
async def _effects_table(engine: AsyncEngine) -> None:
    """Where the test handler writes its effect, in the same transaction as the inbox."""
    async with engine.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)


@dataclass
class FakeRecord:
    value: bytes | None
    key: bytes | None = None
    topic: str = TOPIC
    partition: int = 0
    offset: int = 0
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def envelope(
    text: str,
    event_id: uuid.UUID | None = None,
    version: int = 1,
    event_type: str = "opportunity.note_added",
) -> bytes:
    subject = uuid.uuid4()
    data = OpportunityNoteAdded(
        opportunity_id=subject,
        note_id=uuid.uuid4(),
        reason=NoteReason.GENERAL,
        text=text,
        added_by="alice",
        added_at=NOW,
    ).model_dump(mode="json")
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(event_id or uuid.uuid4()),
            "source": "/dealflow/test",
            "type": event_type,
            "subject": str(subject),
            "time": NOW.isoformat(),
            "datacontenttype": "application/json",
            "dataschema": f"urn:dealflow:schema:{event_type}:v{version}",
            "data": data,
            "correlationid": "flow-1",
            "sequence": 1,
        }
    )


class Harness:
    def __init__(
        self,
        engine: AsyncEngine,
        fail_texts: set[str] | None = None,
        outage: int = 0,
        before_batch: BatchPreparation | None = None,
        changes_nothing: ChangesNothing | None = None,
    ) -> None:
        self.engine = engine
        self.transactions = 0
        self.registry = CollectorRegistry()
        self.dead_letters: list[tuple[str, dict[str, str]]] = []
        self.fail_texts = fail_texts or set()
        self.outage = outage
        self.attempts: dict[str, int] = {}
        self.consumer = EventConsumer(
            group_id="test-group",
            topics=[TOPIC],
            handlers={"opportunity.note_added": self.apply_note},
            unit_of_work=self.unit_of_work,
            send_dead_letter=self.dead_letter,
            clock=lambda: NOW,
            max_attempts=3,
            retry_backoff=0.0,
            metrics=ConsumerMetrics(self.registry),
            infrastructure_answers=self.database_answers,
            before_batch=before_batch,
            changes_nothing=changes_nothing,
        )

    def unit_of_work(self) -> UnitOfWork:
        self.transactions += 1
        return UnitOfWork(self.engine, Outbox("/dealflow/test"), lambda: NOW)

    async def database_answers(self) -> bool:
        return self.outage == 0

    async def apply_note(self, uow: UnitOfWork, event: IncomingEvent[Any]) -> None:
        text = event.payload.text
        self.attempts[text] = self.attempts.get(text, 0) + 1
        if self.outage > 0:
            self.outage -= 1
            raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))
        if text in self.fail_texts:
            raise ValueError(f"cannot apply {text}")
        await uow.connection.execute(
            insert(effects).values(subject=event.envelope.subject, text=text)
        )
        uow.record(event.payload)  # an effect that publishes, to check the flow it carries

    async def dead_letter(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        self.dead_letters.append((topic, headers))

    async def applied(self) -> list[str]:
        async with self.engine.connect() as connection:
            return list(
                (await connection.execute(select(effects.c.text).order_by(effects.c.id))).scalars()
            )


async def test_an_event_delivered_twice_is_applied_once(engine: AsyncEngine) -> None:
    harness = Harness(engine)
    event_id = uuid.uuid4()
    once = envelope("hello", event_id)
    await harness.consumer.apply_batch([FakeRecord(once), FakeRecord(once)])
    await harness.consumer.apply_batch([FakeRecord(once, offset=7)])
    assert await harness.applied() == ["hello"]
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(inbox)) == 1


async def test_a_batch_is_remembered_in_the_inbox_with_one_statement(
    engine: AsyncEngine,
) -> None:
    """The inbox write costs one statement per batch, not one per event; ids applied
    before are still told apart from new ones in the same batch."""
    harness = Harness(engine)
    seen_before = envelope("old")
    await harness.consumer.apply_batch([FakeRecord(seen_before)])
    inbox_writes = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal inbox_writes
        inbox_writes += statement.lstrip().upper().startswith("INSERT INTO INBOX")

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        batch = [FakeRecord(envelope(f"new {i}"), offset=i) for i in range(10)]
        await harness.consumer.apply_batch([*batch, FakeRecord(seen_before, offset=10)])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert inbox_writes == 1
    assert await harness.applied() == ["old", *(f"new {i}" for i in range(10))]


async def test_before_a_batch_its_new_events_are_prepared_in_its_transaction(
    engine: AsyncEngine,
) -> None:
    """`before_batch` (where a service locks its projection rows ahead) is given the
    batch's new events, not those the inbox already holds, in the transaction their
    handlers then run in."""
    prepared: list[list[str]] = []

    async def before_batch(uow: UnitOfWork, events: Sequence[IncomingEvent[Any]]) -> None:
        prepared.append([e.payload.text for e in events])
        await uow.connection.execute(insert(effects).values(subject="-", text="prepared"))

    harness = Harness(engine, before_batch=before_batch)
    seen_before = envelope("old")
    await harness.consumer.apply_batch([FakeRecord(seen_before)])
    batch = [FakeRecord(envelope(f"new {i}"), offset=i) for i in range(3)]
    await harness.consumer.apply_batch([FakeRecord(seen_before), *batch])
    await harness.consumer.apply_batch([FakeRecord(seen_before)])  # nothing new: not asked
    assert prepared == [["old"], ["new 0", "new 1", "new 2"]]
    assert await harness.applied() == [
        *("prepared", "old"),
        *("prepared", "new 0", "new 1", "new 2"),
    ]


async def test_an_event_that_changes_nothing_is_skipped_without_an_inbox_row(
    engine: AsyncEngine,
) -> None:
    """What the handler would leave as it is, told from the event alone, is counted as
    ignored: no handler call, no inbox row, and for a batch of only such events no
    transaction at all. The others of its batch apply as ever."""
    harness = Harness(engine, changes_nothing=lambda payload: payload.text.startswith("noop"))
    inert = [FakeRecord(envelope(f"noop {i}"), offset=i) for i in range(3)]
    assert await harness.consumer.apply_batch(inert) == {}
    assert harness.transactions == 0
    mixed = [FakeRecord(envelope("noop again"), offset=3), FakeRecord(envelope("real"), offset=4)]
    assert await harness.consumer.apply_batch(mixed) == {}
    assert harness.transactions == 1
    assert harness.attempts == {"real": 1}
    assert await harness.applied() == ["real"]
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(inbox)) == 1
    counted = {
        outcome: harness.registry.get_sample_value(
            "dealflow_events_consumed_total",
            {"group": "test-group", "type": "opportunity.note_added", "outcome": outcome},
        )
        for outcome in ("ignored", "applied")
    }
    assert counted == {"ignored": 4, "applied": 1}
    assert harness.dead_letters == []


async def test_unreadable_records_go_to_the_dead_letter_topic_and_the_rest_applies(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine)
    await harness.consumer.apply_batch(
        [
            FakeRecord(b"not json", offset=1),
            FakeRecord(envelope("old schema", version=9), offset=2),
            FakeRecord(envelope("fine"), offset=3),
        ]
    )
    assert await harness.applied() == ["fine"]
    reasons = [
        (t, h["dealflow-dlq-reason"], h["dealflow-dlq-original-offset"])
        for t, h in harness.dead_letters
    ]
    assert reasons == [
        (TOPIC + ".dlq", "unreadable CloudEvents envelope", "1"),
        (
            TOPIC + ".dlq",
            "unsupported dataschema urn:dealflow:schema:opportunity.note_added:v9",
            "2",
        ),
    ]


async def test_a_failing_event_is_retried_then_dead_lettered_without_holding_the_others(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine, fail_texts={"poison"})
    await harness.consumer.apply_batch(
        [
            FakeRecord(envelope("before")),
            FakeRecord(envelope("poison")),
            FakeRecord(envelope("after")),
        ]
    )
    assert await harness.applied() == ["before", "after"]
    # once in the failed batch, then max_attempts times alone
    assert harness.attempts["poison"] == 1 + 3
    ((topic, headers),) = harness.dead_letters
    assert topic == TOPIC + ".dlq"
    assert headers["dealflow-dlq-attempts"] == "3"
    assert "cannot apply poison" in headers["dealflow-dlq-error"]
    assert headers["dealflow-dlq-consumer-group"] == "test-group"


async def test_a_database_outage_is_waited_out_not_dead_lettered(engine: AsyncEngine) -> None:
    harness = Harness(engine, outage=4)
    await harness.consumer.apply_batch([FakeRecord(envelope("survives"))])
    assert await harness.applied() == ["survives"]
    assert harness.dead_letters == []
    assert harness.attempts["survives"] == 5


async def test_events_a_handler_causes_carry_its_flow(engine: AsyncEngine) -> None:
    harness = Harness(engine)
    event_id = uuid.uuid4()
    await harness.consumer.apply_batch([FakeRecord(envelope("cause", event_id))])
    async with engine.connect() as connection:
        (stored,) = (await connection.execute(select(outbox.c.envelope))).scalars()
    caused = orjson.loads(stored)
    assert (caused["correlationid"], caused["causationid"]) == ("flow-1", str(event_id))


async def test_fields_added_later_at_any_depth_do_not_stop_an_event(engine: AsyncEngine) -> None:
    harness = Harness(engine)
    event = orjson.loads(envelope("newer producer"))
    event["data"]["added_later"] = {"x": 1}
    event["data"]["reason_detail"] = "a field this service does not know"
    await harness.consumer.apply_batch([FakeRecord(orjson.dumps(event))])
    assert await harness.applied() == ["newer producer"]
    assert harness.dead_letters == []


async def test_a_handler_failure_while_the_database_answers_is_the_events_and_is_bounded(
    engine: AsyncEngine,
) -> None:
    # An OSError or TimeoutError raised by a handler says nothing about the database:
    # retrying it for ever would block the partition for ever.
    harness = Harness(engine)

    async def times_out(uow: UnitOfWork, event: IncomingEvent[Any]) -> None:
        raise TimeoutError("a handler's own timeout")

    harness.consumer._handlers["opportunity.note_added"] = times_out
    not_done = await asyncio.wait_for(
        harness.consumer.apply_batch([FakeRecord(envelope("stuck"))]), timeout=10
    )
    assert not_done == {}
    ((_, headers),) = harness.dead_letters
    assert headers["dealflow-dlq-reason"] == "handler failed"
    assert "a handler's own timeout" in headers["dealflow-dlq-error"]


async def test_records_kafka_allows_but_no_cloudevent_is_are_dead_lettered_one_by_one(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine)
    not_done = await harness.consumer.apply_batch(
        [
            # legal Kafka: a header without a value, on a record that is not a CloudEvent
            FakeRecord(b'{"hello": "world"}', offset=1, headers=[("trace", None)]),
            FakeRecord(None, key=b"deal", offset=2),
            FakeRecord(envelope("bad header"), offset=3, headers=[("ce_type", b"\xff\xfe")]),
            FakeRecord(envelope("null ce header"), offset=4, headers=[("ce_id", None)]),
            FakeRecord(envelope("unknown", event_type="opportunity.teleported"), offset=5),
            # a valid event with an odd header of someone else's is applied
            FakeRecord(envelope("fine"), offset=6, headers=[("x-odd", b"\xff"), ("n", None)]),
        ]
    )
    assert not_done == {}
    assert await harness.applied() == ["fine"]
    assert [
        (h["dealflow-dlq-original-offset"], h["dealflow-dlq-reason"])
        for _, h in harness.dead_letters
    ] == [
        ("1", "unreadable CloudEvents envelope"),
        ("2", "record has no value"),
        ("3", "header ce_type is not UTF-8"),
        ("4", "header ce_id has no value"),
        ("5", "unknown event type 'opportunity.teleported'"),
    ]


async def test_a_known_type_without_a_handler_is_skipped_from_its_header_without_parsing(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine)
    not_done = await harness.consumer.apply_batch(
        [
            FakeRecord(b"not parsed at all", headers=[("ce_type", b"opportunity.won")]),
            FakeRecord(envelope("fine", event_type="opportunity.lost"), offset=1),
        ]
    )
    assert not_done == {}
    assert harness.dead_letters == []
    assert await harness.applied() == []


async def test_headers_that_contradict_the_envelope_are_dead_lettered(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine)
    await harness.consumer.apply_batch(
        [
            FakeRecord(
                envelope("liar"), headers=[("ce_type", b"opportunity.note_added"), ("ce_id", b"1")]
            )
        ]
    )
    assert [h["dealflow-dlq-reason"] for _, h in harness.dead_letters] == [
        "CloudEvents headers disagree with the envelope"
    ]
    assert await harness.applied() == []


async def test_when_the_dead_letter_topic_is_away_the_partition_stops_at_that_record(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine)

    async def unavailable(*_: Any) -> None:
        raise ConnectionError("dlq topic missing")

    harness.consumer._send_dead_letter = unavailable
    not_done = await asyncio.wait_for(
        harness.consumer.apply_batch(
            [
                FakeRecord(envelope("p0 before"), partition=0, offset=10),
                FakeRecord(b"poison", partition=0, offset=11),
                FakeRecord(envelope("p0 after"), partition=0, offset=12),
                FakeRecord(envelope("p1 goes on"), partition=1, offset=40),
            ]
        ),
        timeout=10,
    )
    # Nothing at or after the poison record of partition 0 is applied; the caller reads
    # it again from offset 11. Partition 1 is not held by partition 0's trouble.
    assert not_done == {PartitionKey(TOPIC, 0): 11}
    assert sorted(await harness.applied()) == ["p0 before", "p1 goes on"]


async def test_a_handler_failure_whose_dead_letter_cannot_be_written_stops_the_partition(
    engine: AsyncEngine,
) -> None:
    harness = Harness(engine, fail_texts={"poison"})

    async def unavailable(*_: Any) -> None:
        raise ConnectionError("dlq topic missing")

    harness.consumer._send_dead_letter = unavailable
    not_done = await harness.consumer.apply_batch(
        [
            FakeRecord(envelope("first"), offset=1),
            FakeRecord(envelope("poison"), offset=2),
            FakeRecord(envelope("held"), offset=3),
        ]
    )
    assert not_done == {PartitionKey(TOPIC, 0): 2}
    assert await harness.applied() == ["first"]
