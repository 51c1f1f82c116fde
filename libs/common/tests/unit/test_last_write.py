"""A unit of work's last write goes with its outbox rows: one statement on PostgreSQL,
both stored or neither, and a refused write refused as it would be alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Uuid, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.db import count_statements
from dealflow_common.errors import NotFound, StaleVersion
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.messaging.tables import event_sequence, outbox
from dealflow_common.uow import UnitOfWork
from dealflow_common.versioned import VersionedTable
from dealflow_common.with_lines import InsertWithLines

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
DEALS = VersionedTable(deals, "deal")
MOVES = DEALS.with_entry(moves, "deal_id")
PAPERS = InsertWithLines(papers, paper_lines, "paper_id")


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


async def test_a_last_write_without_events_runs_alone(engine: AsyncEngine) -> None:
    deal_id = await a_deal(engine)
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        await uow.commit(DEALS.last_save(deal_id, 1, {"stage": "proposal", "version": 2}))
    async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
        with pytest.raises(StaleVersion):
            await uow.commit(DEALS.last_save(deal_id, 1, {"stage": "won", "version": 2}))
    assert (await stored(engine, deal_id))["stage"] == "proposal"
