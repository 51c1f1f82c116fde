"""A unit of work's last write goes with its outbox rows: one statement on PostgreSQL,
both stored or neither, and a refused write refused as it would be alone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.db import count_statements
from dealflow_common.direct import DirectStatement
from dealflow_common.errors import NotFound, StaleVersion
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.messaging.tables import event_sequence, outbox
from dealflow_common.one_write import ReadChanged, StaleCopy, once_then_locked
from dealflow_common.uow import CommitOutcomeUnknown, UnitOfWork
from dealflow_common.versioned import VersionedTable
from dealflow_common.with_lines import InsertWithLines, entry_of

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

metadata = MetaData()
deals = Table(
    "lw_deals",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("version", Integer, nullable=False),
)
moves = Table(
    "lw_moves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deal_id", Uuid, nullable=False),
    Column("to_stage", String(20), nullable=False),
)
papers = Table(
    "lw_papers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("title", String(50), nullable=False),
)
paper_lines = Table(
    "lw_paper_lines",
    metadata,
    Column("paper_id", Uuid, ForeignKey("lw_papers.id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("text", String(50), nullable=False),
)
paper_stamps = Table(
    "lw_paper_stamps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("paper_id", Uuid, ForeignKey("lw_papers.id"), nullable=False),
    Column("text", String(50), nullable=False),
)
DEALS = VersionedTable(deals, "deal")
MOVES = DEALS.with_entry(moves, "deal_id")
PAPERS = InsertWithLines(papers, paper_lines, "paper_id")
STAMPED_PAPERS = InsertWithLines(
    papers,
    paper_lines,
    "paper_id",
    also=lambda paper_id: [entry_of(paper_stamps, "paper_id", paper_id)[0]],
)

# A paper is filed only on a deal still at lead (as a quote only on an open deal).
PAPERS_ON_LEADS = InsertWithLines(
    papers,
    paper_lines,
    "paper_id",
    gate=select(deals.c.id)
    .where(deals.c.id == bindparam("g_deal"), deals.c.stage == "lead")
    .with_for_update(read=True),
)


@pytest.fixture
async def engine(both_engines: AsyncEngine) -> AsyncEngine:
    async with both_engines.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return both_engines


def event(subject: uuid.UUID, text: str) -> OpportunityNoteAdded:
    return OpportunityNoteAdded(
        opportunity_id=subject,
        note_id=uuid.uuid4(),
        reason=NoteReason.GENERAL,
        text=text,
        added_by="alice",
        added_at=NOW,
    )


async def a_deal(engine: AsyncEngine, version: int = 1) -> uuid.UUID:
    deal_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(deals.insert().values(id=deal_id, stage="lead", version=version))
    return deal_id


async def stored(engine: AsyncEngine, deal_id: uuid.UUID) -> dict[str, object]:
    async with engine.connect() as connection:
        deal = (await connection.execute(select(deals).where(deals.c.id == deal_id))).one()
        entries = (
            await connection.execute(select(moves.c.to_stage).where(moves.c.deal_id == deal_id))
        ).scalars()
        events = (
            await connection.execute(
                select(outbox.c.sequence)
                .where(outbox.c.subject == str(deal_id))
                .order_by(outbox.c.id)
            )
        ).scalars()
        last = await connection.scalar(
            select(event_sequence.c.last_sequence).where(event_sequence.c.subject == str(deal_id))
        )
        return {
            "stage": deal.stage,
            "version": deal.version,
            "entries": list(entries),
            "sequences": list(events),
            "last_sequence": last,
        }


async def test_a_stage_move_its_entry_and_its_events_are_stored_by_one_statement(
    engine: AsyncEngine,
) -> None:
    deal_id = await a_deal(engine)
    registry = CollectorRegistry()
    count_statements(engine, registry)
    writer = Outbox("/dealflow/test")
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        last = MOVES.last_save(
            deal_id, 1, {"stage": "proposal", "version": 2}, {"to_stage": "proposal"}
        )
        uow.record(event(deal_id, "moved"), event(deal_id, "noted"))
        before = registry.get_sample_value("dealflow_db_statements_total") or 0
        await uow.commit(last)
        sent = (registry.get_sample_value("dealflow_db_statements_total") or 0) - before
    assert await stored(engine, deal_id) == {
        "stage": "proposal",
        "version": 2,
        "entries": ["proposal"],
        "sequences": [1, 2],
        "last_sequence": 2,
    }
    if engine.dialect.name == "postgresql":
        assert sent == 1  # the write, its entry, the numbering and the outbox rows
    else:
        assert sent > 1  # SQLite has no writing CTE: the write, then the append


async def test_a_stale_last_write_is_refused_and_stores_no_event_and_no_number(
    engine: AsyncEngine,
) -> None:
    deal_id = await a_deal(engine, version=3)
    writer = Outbox("/dealflow/test")
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        uow.record(event(deal_id, "first"))
        await uow.commit(DEALS.last_save(deal_id, 3, {"stage": "proposal", "version": 4}))
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        uow.record(event(deal_id, "lost"))
        with pytest.raises(StaleVersion) as refused:
            await uow.commit(DEALS.last_save(deal_id, 3, {"stage": "won", "version": 4}))
    assert (refused.value.expected, refused.value.actual) == (3, 4)
    after = await stored(engine, deal_id)
    assert (after["stage"], after["sequences"], after["last_sequence"]) == ("proposal", [1], 1)
    # The next event of the deal is numbered 2: the refused work left no gap.
    async with UnitOfWork(engine, writer, lambda: NOW) as uow:
        uow.record(event(deal_id, "next"))
        await uow.commit(DEALS.last_save(deal_id, 4, {"stage": "won", "version": 5}))
    assert (await stored(engine, deal_id))["sequences"] == [1, 2]


async def test_a_last_write_of_a_row_that_is_gone_is_not_found(engine: AsyncEngine) -> None:
    gone = uuid.uuid4()
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        uow.record(event(gone, "nobody"))
        with pytest.raises(NotFound):
            await uow.commit(
                MOVES.last_save(gone, 1, {"stage": "won", "version": 2}, {"to_stage": "won"})
            )
    async with engine.connect() as connection:
        assert (await connection.execute(select(outbox.c.id))).all() == []


async def test_a_new_row_its_lines_and_its_events_go_together(engine: AsyncEngine) -> None:
    paper_id = uuid.uuid4()
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        uow.record(event(paper_id, "drafted"))
        lines = [{"line_no": 1, "text": "one"}, {"line_no": 2, "text": "two"}]
        await uow.commit(PAPERS.last_add({"id": paper_id, "title": "Offer"}, lines))
    async with engine.connect() as connection:
        title = await connection.scalar(select(papers.c.title).where(papers.c.id == paper_id))
        texts = (
            await connection.execute(select(paper_lines.c.text).order_by(paper_lines.c.line_no))
        ).scalars()
        subjects = (await connection.execute(select(outbox.c.subject))).scalars()
        assert (title, list(texts), list(subjects)) == ("Offer", ["one", "two"], [str(paper_id)])


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_new_row_its_lines_the_rows_going_with_it_and_its_events_are_one_statement(
    engine: AsyncEngine,
) -> None:
    # A new deal, its owners, its first history entry and its search document, as one.
    paper_id = uuid.uuid4()
    registry = CollectorRegistry()
    count_statements(engine, registry)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        uow.record(event(paper_id, "drafted"))
        last = STAMPED_PAPERS.last_add(
            {"id": paper_id, "title": "Offer"}, [{"line_no": 1, "text": "one"}], {"e_text": "new"}
        )
        sent = await sql_sent(uow)
        await uow.commit(last)
    await asyncio.sleep(0)  # asyncpg hands its query log over with call_soon
    assert registry.get_sample_value("dealflow_db_statements_total") == 1
    assert transaction_control(sent) == []  # it committed by itself
    async with engine.connect() as connection:
        stamps = await connection.execute(
            select(paper_stamps.c.text).where(paper_stamps.c.paper_id == paper_id)
        )
        lines = await connection.execute(
            select(paper_lines.c.text).where(paper_lines.c.paper_id == paper_id)
        )
        subjects = await connection.execute(
            select(outbox.c.subject).where(outbox.c.subject == str(paper_id))
        )
        assert (list(stamps.scalars()), list(lines.scalars()), len(subjects.all())) == (
            ["new"],
            ["one"],
            1,
        )


async def gone_from_lead(_connection: object) -> None:
    raise ReadChanged("the deal moved on")


async def file_paper(
    engine: AsyncEngine, deal_id: uuid.UUID, paper_id: uuid.UUID | None = None
) -> uuid.UUID:
    """A paper on `deal_id`, with its event, as the last write of a one-write work."""
    paper_id = paper_id or uuid.uuid4()
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        uow.record(event(paper_id, "filed"))
        last = PAPERS_ON_LEADS.last_add(
            {"id": paper_id, "title": "Offer"},
            [{"line_no": 1, "text": "one"}],
            {"g_deal": deal_id},
            gone_from_lead,
        )
        await uow.commit(last)
    return paper_id


async def papers_stored(engine: AsyncEngine, paper_id: uuid.UUID) -> tuple[int, int, int]:
    """How many of the paper's rows, lines and events are stored."""
    async with engine.connect() as connection:
        counts = []
        for query in (
            select(papers.c.id).where(papers.c.id == paper_id),
            select(paper_lines.c.line_no).where(paper_lines.c.paper_id == paper_id),
            select(outbox.c.id).where(outbox.c.subject == str(paper_id)),
        ):
            counts.append(len((await connection.execute(query)).all()))
        return counts[0], counts[1], counts[2]


async def test_a_gated_row_is_inserted_while_its_gate_holds(engine: AsyncEngine) -> None:
    paper_id = await file_paper(engine, await a_deal(engine))
    assert await papers_stored(engine, paper_id) == (1, 1, 1)


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_gated_row_whose_gate_is_shut_stores_nothing_and_says_why(
    engine: AsyncEngine,
) -> None:
    deal_id = await a_deal(engine)
    async with engine.begin() as connection:
        await connection.execute(deals.update().values(stage="won").where(deals.c.id == deal_id))
    attempt = uuid.uuid4()
    with pytest.raises(ReadChanged):
        await file_paper(engine, deal_id, attempt)
    assert await papers_stored(engine, attempt) == (0, 0, 0)


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_gated_insert_waits_for_a_change_of_its_gate_and_sees_it(
    engine: AsyncEngine,
) -> None:
    """The deal is being moved on when the paper is filed: the gate's share lock waits for
    that transaction, then reads the deal as it committed it, no longer at lead."""
    deal_id = await a_deal(engine)
    async with engine.connect() as mover:
        await mover.begin()
        await mover.execute(deals.update().values(stage="won").where(deals.c.id == deal_id))
        filing = asyncio.ensure_future(file_paper(engine, deal_id))
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        for _ in range(200):
            if await mover.scalar(text(waiting)):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the filing never waited for the move")
        await mover.commit()
    with pytest.raises(ReadChanged):
        await filing


async def test_a_last_write_without_events_runs_alone(engine: AsyncEngine) -> None:
    deal_id = await a_deal(engine)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        await uow.commit(DEALS.last_save(deal_id, 1, {"stage": "proposal", "version": 2}))
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        with pytest.raises(StaleVersion):
            await uow.commit(DEALS.last_save(deal_id, 1, {"stage": "won", "version": 2}))
    assert (await stored(engine, deal_id))["stage"] == "proposal"


# One-write mode (`one_write`): a work whose only write is its last commits without a
# transaction on PostgreSQL; on SQLite the mode does nothing.

NEW_STAGE = {"stage": "proposal", "version": 2}


async def sql_sent(uow: UnitOfWork) -> list[str]:
    """What the work's connection sends PostgreSQL from now on, as the driver sends it:
    BEGIN and COMMIT included, which SQLAlchemy's statement events do not see. (The work
    gives its connection back as it commits, so afterwards there is nothing to ask.)"""
    adapted: Any = (await uow.connection.get_raw_connection()).dbapi_connection
    sent: list[str] = []
    adapted._connection.add_query_logger(lambda record: sent.append(record.query))
    return sent


def transaction_control(sent: list[str]) -> list[str]:
    """The transactions' statements among `sent` (asyncpg sends "BEGIN;")."""
    return [
        sql for sql in sent if sql.split()[0].rstrip(";").upper() in ("BEGIN", "COMMIT", "ROLLBACK")
    ]


async def in_transaction(uow: UnitOfWork) -> bool:
    """Whether the server holds a transaction open for the work (asyncpg knows it from
    each answer); SQLite: whether SQLAlchemy began one."""
    if uow.connection.dialect.name != "postgresql":
        return uow.connection.in_transaction()
    adapted: Any = (await uow.connection.get_raw_connection()).dbapi_connection
    return bool(adapted._connection.is_in_transaction())


async def test_in_one_write_mode_the_reads_and_the_last_write_need_no_transaction(
    engine: AsyncEngine,
) -> None:
    deal_id = await a_deal(engine)
    registry = CollectorRegistry()
    count_statements(engine, registry)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        found = await uow.connection.execute(select(deals.c.version).where(deals.c.id == deal_id))
        assert found.scalar_one() == 1
        postgres = engine.dialect.name == "postgresql"
        assert await in_transaction(uow) is not postgres  # no BEGIN was sent
        sent = await sql_sent(uow) if postgres else []
        uow.record(event(deal_id, "moved"))
        await uow.commit(MOVES.last_save(deal_id, 1, NEW_STAGE, {"to_stage": "proposal"}))
    await asyncio.sleep(0)  # asyncpg hands its query log over with call_soon
    assert transaction_control(sent) == []  # the last write committed by itself
    after = await stored(engine, deal_id)
    assert (after["stage"], after["entries"], after["sequences"]) == ("proposal", ["proposal"], [1])


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_in_one_write_mode_the_read_takes_no_lock_and_the_version_refuses(
    engine: AsyncEngine,
) -> None:
    """Another writer is not kept waiting by the read; its change makes the last write
    stale, which stores neither the row nor the events."""
    deal_id = await a_deal(engine)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        # Even a locking read holds nothing once it returns: no transaction keeps it.
        await uow.connection.execute(select(deals).where(deals.c.id == deal_id).with_for_update())
        async with engine.begin() as other:
            await other.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            await other.execute(
                deals.update().where(deals.c.id == deal_id).values(stage="lost", version=2)
            )
        uow.record(event(deal_id, "moved"))
        with pytest.raises(StaleVersion):
            await uow.commit(MOVES.last_save(deal_id, 1, NEW_STAGE, {"to_stage": "proposal"}))
    after = await stored(engine, deal_id)
    assert (after["stage"], after["entries"], after["sequences"]) == ("lost", [], [])


@pytest.mark.parametrize("through", ["sqlalchemy", "direct"])
async def test_in_one_write_mode_an_earlier_write_begins_the_transaction(
    engine: AsyncEngine, through: str
) -> None:
    """A write before the last begins the transaction, so a refused last write takes it
    back too: nothing of the work is stored."""
    deal_id = await a_deal(engine, version=3)
    entry = {"deal_id": deal_id, "to_stage": "early"}
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        if through == "direct":
            await DirectStatement(moves.insert()).rowcount(uow.connection, entry)
        else:
            await uow.connection.execute(moves.insert(), entry)
        assert await in_transaction(uow)
        uow.record(event(deal_id, "moved"))
        with pytest.raises(StaleVersion):
            await uow.commit(MOVES.last_save(deal_id, 1, NEW_STAGE, {"to_stage": "proposal"}))
    assert (await stored(engine, deal_id))["entries"] == []


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_session_lost_at_a_last_write_sent_alone_is_an_unknown_outcome(
    engine: AsyncEngine,
) -> None:
    """The last write sent without a transaction is the commit: lost there, only a read
    can tell whether it was stored. The connection goes back to the pool in transactions."""
    deal_id = await a_deal(engine)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        pid = (await uow.connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        async with engine.connect() as killer:
            await killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        uow.record(event(deal_id, "moved"))
        with pytest.raises(CommitOutcomeUnknown):
            await uow.commit(MOVES.last_save(deal_id, 1, NEW_STAGE, {"to_stage": "proposal"}))
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        await uow.connection.execute(select(deals.c.id))
        assert await in_transaction(uow)


async def test_a_connection_leaves_one_write_mode_when_its_work_ends(engine: AsyncEngine) -> None:
    deal_id = await a_deal(engine)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW).one_write() as uow:
        await uow.connection.execute(select(deals.c.id))
    # The next work on the pooled connection is an ordinary transaction again.
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        await uow.connection.execute(select(deals).where(deals.c.id == deal_id))
        assert await in_transaction(uow)


@pytest.mark.parametrize(("version_named", "runs"), [(False, [True, False]), (True, [True])])
async def test_a_change_refused_at_its_write_runs_again_locked_unless_it_named_the_version(
    version_named: bool, runs: list[bool]
) -> None:
    expected_version = 1 if version_named else None
    ran: list[bool] = []

    async def change(unlocked: bool) -> str:
        ran.append(unlocked)
        if unlocked:
            raise StaleVersion("deal", 1, 2)
        return "stored"

    if version_named:
        with pytest.raises(StaleVersion):
            await once_then_locked(change, expected_version)
    else:
        assert await once_then_locked(change, expected_version) == "stored"
    assert ran == runs


async def test_a_change_whose_read_changed_runs_again_locked_even_if_it_named_the_version() -> None:
    # The version named is the changed row's, still current: what changed was another.
    ran: list[bool] = []

    async def change(unlocked: bool) -> str:
        ran.append(unlocked)
        if unlocked:
            raise ReadChanged("the deal closed")
        return "answered"

    assert await once_then_locked(change, 1) == "answered"
    assert ran == [True, False]


@pytest.mark.parametrize(("refusals", "runs"), [(1, [True, True]), (2, [True, True, False])])
async def test_a_change_refused_on_a_copy_runs_again_from_a_read_then_locked(
    refusals: int, runs: list[bool]
) -> None:
    """A refused copy is forgotten (`recent`): the next run reads, unlocked, as a first
    run without a copy would; refused again, it runs locked. Even with If-Match: the
    version was compared with the copy's, not the row's."""
    ran: list[bool] = []

    async def change(unlocked: bool) -> str:
        ran.append(unlocked)
        if len(ran) <= refusals:
            raise StaleCopy("the copy was out of date")
        return "stored"

    assert await once_then_locked(change, 1) == "stored"
    assert ran == runs
