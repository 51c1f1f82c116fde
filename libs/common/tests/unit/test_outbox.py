"""The outbox stores events with their state change; the relay publishes them in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.context import flow
from dealflow_common.contracts import CloudEvent
from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.http.problems import from_database_error
from dealflow_common.messaging.outbox import Outbox, OutboxRelay, RelayIncomplete, RelayMetrics
from dealflow_common.messaging.tables import outbox
from dealflow_common.uow import CommitOutcomeUnknown, UnitOfWork

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
A, B = uuid.uuid4(), uuid.uuid4()


_RELAYS: list[OutboxRelay] = []


@pytest.fixture
async def engine(both_engines: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Each dialect has its own statements here: every test runs on both. The relays a
    test made give up their PostgreSQL lock at its end, as a stopped replica does."""
    yield both_engines
    while _RELAYS:
        await _RELAYS.pop().release()


def note(opportunity_id: uuid.UUID, text: str) -> OpportunityNoteAdded:
    return OpportunityNoteAdded(
        opportunity_id=opportunity_id,
        note_id=uuid.uuid4(),
        reason=NoteReason.GENERAL,
        text=text,
        added_by="alice",
        added_at=NOW,
    )


class FakeSender:
    """Acks every record, except the ones named in `fail` (by note text)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.sent: list[CloudEvent] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]:
        event = CloudEvent.model_validate_json(value)
        assert key == event.subject.encode()
        assert headers["content-type"] == "application/cloudevents+json"
        assert (headers["ce_type"], headers["ce_id"]) == (event.type, str(event.id))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if event.data["text"] in self.fail:
            future.set_exception(TimeoutError("no ack"))
        else:
            self.sent.append(event)
            future.set_result(None)
        return future


def relay(
    engine: AsyncEngine,
    sender: FakeSender,
    writer: Outbox,
    registry: CollectorRegistry | None = None,
) -> OutboxRelay:
    made = OutboxRelay(
        engine,
        writer,
        sender,
        schema_name=f"test_{id(engine)}",  # one lock per test database
        clock=lambda: NOW,
        batch_size=100,
        poll_interval=0.01,
        publish_timeout=1.0,
        outbox_retention=timedelta(days=1),
        inbox_retention=timedelta(days=1),
        metrics=RelayMetrics(registry or CollectorRegistry()),
    )
    _RELAYS.append(made)
    return made


async def commit(engine: AsyncEngine, writer: Outbox, *events: OpportunityNoteAdded) -> None:
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        uow.record(*events)
        await uow.commit()


async def test_sequence_counts_each_opportunitys_events_from_one(engine: AsyncEngine) -> None:
    writer = Outbox("/dealflow/test")
    await commit(engine, writer, note(A, "a1"), note(B, "b1"), note(A, "a2"))
    await commit(engine, writer, note(A, "a3"))
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(
                    outbox.c.subject, outbox.c.sequence, outbox.c.event_id, outbox.c.envelope
                ).order_by(outbox.c.id)
            )
        ).all()
    assert [(uuid.UUID(s), n) for s, n, _, _ in rows] == [(A, 1), (B, 1), (A, 2), (A, 3)]
    # The envelope is whole JSON and carries the same number and id as its row.
    envelopes = [CloudEvent.model_validate_json(envelope) for *_, envelope in rows]
    assert [(e.sequence, e.id) for e in envelopes] == [(n, i) for _, n, i, _ in rows]
    assert [e.data["text"] for e in envelopes] == ["a1", "b1", "a2", "a3"]
    # One event is appended by a statement of its own on PostgreSQL (values, not arrays):
    # its row is filled as a row of several events' append is.
    async with engine.connect() as connection:
        described = (
            await connection.execute(
                select(
                    outbox.c.topic,
                    outbox.c.event_type,
                    outbox.c.correlation_id,
                    outbox.c.created_at,
                    outbox.c.sent_at,
                ).order_by(outbox.c.id)
            )
        ).all()
    assert described[3] == described[2]
    assert described[3].topic == "dealflow.opportunity.events"


async def test_work_that_does_not_commit_writes_no_event(engine: AsyncEngine) -> None:
    writer = Outbox("/dealflow/test")
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        uow.record(note(A, "never"))
    async with engine.connect() as connection:
        assert (await connection.execute(select(outbox.c.id))).all() == []


async def test_the_relay_publishes_each_event_once_in_commit_order(engine: AsyncEngine) -> None:
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    await commit(engine, writer, note(A, "a1"), note(A, "a2"))
    await commit(engine, writer, note(B, "b1"), note(A, "a3"))
    registry = CollectorRegistry()
    relayer = relay(engine, sender, writer, registry)
    assert await relayer.relay_once() == 4
    assert await relayer.relay_once() == 0
    assert [e.data["text"] for e in sender.sent] == ["a1", "a2", "b1", "a3"]
    assert [e.sequence for e in sender.sent if e.subject == str(A)] == [1, 2, 3]
    # One batch found rows; the read that found none is not a batch.
    assert registry.get_sample_value("dealflow_outbox_relay_batches_total") == 1


async def unsent_texts(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.envelope).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id)
        )
        return [CloudEvent.model_validate_json(e).data["text"] for (e,) in rows]


async def test_what_was_sent_is_stamped_by_the_next_read_or_on_release(
    engine: AsyncEngine,
) -> None:
    """On PostgreSQL the stamp of a batch rides on the statement that reads the next one
    (one round trip a batch, not two), and a relay that stops stamps what it sent; on
    SQLite a batch is stamped at once."""
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    await commit(engine, writer, note(A, "a1"), note(B, "b1"))
    relayer = relay(engine, sender, writer)
    assert await relayer.relay_once() == 2
    postgres = engine.dialect.name == "postgresql"
    assert await unsent_texts(engine) == (["a1", "b1"] if postgres else [])
    await commit(engine, writer, note(A, "a2"))
    assert await relayer.relay_once() == 1  # a1 and b1 are not read again
    assert await unsent_texts(engine) == (["a2"] if postgres else [])
    await relayer.release()
    assert await unsent_texts(engine) == []
    assert [e.data["text"] for e in sender.sent] == ["a1", "b1", "a2"]


async def test_an_unacked_record_holds_back_the_later_records_of_its_opportunity(
    engine: AsyncEngine,
) -> None:
    writer = Outbox("/dealflow/test")
    await commit(engine, writer, note(A, "a1"), note(A, "a2"), note(B, "b1"), note(A, "a3"))
    failing = FakeSender(fail={"a2"})
    first = relay(engine, failing, writer)
    with pytest.raises(RelayIncomplete):
        await first.relay_once()
    await first.release()  # a replica that stops; the next one takes over
    healthy = FakeSender()
    assert await relay(engine, healthy, writer).relay_once() == 2
    # a3 was acked the first time but not marked sent, so it follows a2 again: a
    # subscriber may see a duplicate (same id), never a gap.
    assert [e.data["text"] for e in healthy.sent] == ["a2", "a3"]
    first_a3 = next(e for e in failing.sent if e.data["text"] == "a3")
    assert first_a3.id == healthy.sent[1].id


async def test_events_carry_the_flow_they_were_recorded_in(engine: AsyncEngine) -> None:
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        with flow("deal-42", "event-7"):
            uow.record(note(A, "inside"))
        with flow("deal-43", None):
            uow.record(note(B, "other"))
        await uow.commit()
    await relay(engine, sender, writer).relay_once()
    inside, other = sender.sent
    assert (inside.correlationid, inside.causationid) == ("deal-42", "event-7")
    assert (other.correlationid, other.causationid) == ("deal-43", None)
    assert inside.source == "/dealflow/test"
    assert inside.dataschema == "urn:dealflow:schema:opportunity.note_added:v1"
    assert orjson.loads(orjson.dumps(inside.data))["opportunity_id"] == str(A)


async def _terminate_session_of(uow: UnitOfWork, engine: AsyncEngine) -> None:
    pid = (await uow.connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    async with engine.connect() as killer:
        await killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        await killer.commit()


# PostgreSQL only: SQLite has no server session to lose.
@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_session_lost_before_the_commit_stores_nothing_and_answers_503(
    engine: AsyncEngine,
) -> None:
    """The outbox rows are written before COMMIT is sent: a session lost then loses the
    transaction, so the request is answered 503 (nothing changed, send it again)."""
    writer = Outbox("/dealflow/test")
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        await _terminate_session_of(uow, engine)
        uow.record(note(A, "lost"))
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await uow.commit()
    problem = from_database_error(raised.value)
    assert problem is not None
    assert (problem.status, problem.slug, problem.headers) == (
        503,
        "unavailable",
        {"Retry-After": "1"},
    )
    async with engine.connect() as connection:
        assert (await connection.execute(select(outbox.c.id))).all() == []


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_session_lost_at_the_commit_is_an_unknown_outcome(engine: AsyncEngine) -> None:
    """COMMIT sent and no answer: the change may or may not be stored, and the unit of
    work says exactly that rather than a 503 that would invite a second create."""
    writer = Outbox("/dealflow/test")
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        await _terminate_session_of(uow, engine)
        with pytest.raises(CommitOutcomeUnknown):
            await uow.commit()
    # The pool recovers: the next unit of work commits.
    await commit(engine, writer, note(A, "after"))


async def _relay_lock_holder(engine: AsyncEngine, relayer: OutboxRelay) -> tuple[int, str]:
    """The backend that holds the relay's advisory lock, and the statement it ran last."""
    key = relayer._leadership._key  # type: ignore[union-attr]  # the relay's own lock
    async with engine.connect() as connection:
        holders = (
            await connection.exec_driver_sql(
                # A bigint key is shown split: its high half as classid, its low as objid.
                "SELECT a.pid, a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
                f" AND l.classid = {key >> 32} AND l.objid = {key & 0xFFFFFFFF}"
            )
        ).all()
    assert len(holders) == 1, holders
    holder = holders[0]._mapping
    return int(holder["pid"]), str(holder["query"])


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_the_relay_reads_and_stamps_on_its_lock_connection_by_index(
    engine: AsyncEngine,
) -> None:
    """Only the lock's holder reads and stamps, and only its session plans without
    sequential scans (a generic plan made on the empty outbox would read it whole on
    every stamp) and commits without waiting for the flush (a lost stamp is a duplicate
    the inboxes skip); every other session keeps PostgreSQL's defaults."""
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    await commit(engine, writer, note(A, "a1"))
    relayer = relay(engine, sender, writer)
    assert await relayer.relay_once() == 1
    await commit(engine, writer, note(A, "a2"))
    assert await relayer.relay_once() == 1  # stamps a1, reads a2
    _, last = await _relay_lock_holder(engine, relayer)
    assert "UPDATE" in last
    assert "sent_at" in last
    lock = relayer._leadership.connection  # type: ignore[union-attr]  # the relay's own
    for setting in ("enable_seqscan", "synchronous_commit"):
        shown = await lock.exec_driver_sql(f"SHOW {setting}")
        assert shown.scalar_one() == "off", setting
        async with engine.connect() as connection:
            shown = await connection.exec_driver_sql(f"SHOW {setting}")
            assert shown.scalar_one() == "on", setting
    assert await unsent_texts(engine) == ["a2"]


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_relay_whose_lock_session_is_lost_takes_the_lock_again_and_goes_on(
    engine: AsyncEngine,
) -> None:
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    await commit(engine, writer, note(A, "a1"))
    relayer = relay(engine, sender, writer)
    assert await relayer.relay_once() == 1
    pid, _ = await _relay_lock_holder(engine, relayer)
    async with engine.connect() as killer:
        await killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        await killer.commit()
    await commit(engine, writer, note(A, "a2"))
    with pytest.raises(sa_exc.DBAPIError):
        await relayer.relay_once()  # the read fails with its session
    # The next read checks the session, takes the lock on a new one and goes on: it
    # stamps a1, whose stamp the failed read did not make, and sends a2 once.
    assert await relayer.relay_once() == 1
    assert [e.data["text"] for e in sender.sent] == ["a1", "a2"]
    new_pid, _ = await _relay_lock_holder(engine, relayer)
    assert new_pid != pid
    assert await unsent_texts(engine) == ["a2"]


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_the_relays_plan_made_on_an_empty_outbox_still_stamps_by_index(
    engine: AsyncEngine,
) -> None:
    """The relay's statement, prepared and run on an empty outbox, still stamps through
    the primary key once the table has grown: without the session's setting, the
    generic plan PostgreSQL settled on there read the whole table every round."""
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    relayer = relay(engine, sender, writer)
    for n in range(8):  # past the five custom plans PostgreSQL makes before a generic one
        await commit(engine, writer, note(A, f"a{n}"))
        assert await relayer.relay_once() == 1
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO outbox (event_id, topic, subject, sequence, event_type,"
            " correlation_id, envelope, created_at, sent_at) SELECT gen_random_uuid(), 't',"
            " 's', n, 'e', 'c', '{}', now(), now() FROM generate_series(1, 5000) AS n"
        )
    lock = relayer._leadership.connection  # type: ignore[union-attr]  # the relay's own
    prepared = await lock.exec_driver_sql(
        # The one the relay ran (the driver also prepares it once to describe its rows).
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH stamped AS%'"
        " ORDER BY generic_plans + custom_plans DESC LIMIT 1"
    )
    name = prepared.scalar_one()
    plan = await lock.exec_driver_sql(
        f"EXPLAIN (COSTS OFF) EXECUTE {name}(now(), ARRAY[1]::bigint[], 500)"
    )
    text = "\n".join(row[0] for row in plan)
    assert "Seq Scan" not in text, text
    assert "outbox_pkey" in text, text


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_relay_that_gives_up_its_lock_leaves_no_session_of_its_settings_in_the_pool(
    engine: AsyncEngine,
) -> None:
    """The lock's session plans without sequential scans and commits without waiting for
    the flush: handed back to the pool, it would serve a business write that a database
    crash could lose. Giving the lock up ends the session instead."""
    writer, sender = Outbox("/dealflow/test"), FakeSender()
    await commit(engine, writer, note(A, "a1"))
    relayer = relay(engine, sender, writer)
    assert await relayer.relay_once() == 1
    pid, _ = await _relay_lock_holder(engine, relayer)
    await relayer.release()
    async with engine.connect() as connection:
        alive = await connection.exec_driver_sql(
            f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
        )
        assert alive.scalar_one() == 0
    # Every connection the pool can give now commits synchronously.
    connections = [await engine.connect() for _ in range(3)]
    try:
        for connection in connections:
            shown = await connection.exec_driver_sql("SHOW synchronous_commit")
            assert shown.scalar_one() == "on"
    finally:
        for connection in connections:
            await connection.close()
