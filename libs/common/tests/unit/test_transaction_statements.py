"""BEGIN, COMMIT and ROLLBACK are round trips too: `count_statements` counts them apart
(`dealflow_db_transaction_statements_total`), as PostgreSQL receives them, so that
`make bench` can give round trips per deal beside statements per deal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.contracts.opportunity import NoteReason, OpportunityNoteAdded
from dealflow_common.db import count_statements, reading
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.uow import UnitOfWork

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

metadata = MetaData()
notes = Table(
    "txn_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(40), nullable=False),
)


# On PostgreSQL only: there the driver's transactions send BEGIN, COMMIT and ROLLBACK.
pytestmark = pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)


@pytest.fixture
async def counted(both_engines: AsyncEngine) -> tuple[AsyncEngine, CollectorRegistry]:
    """The engine, counted as the platform counts it: on every connection it opens once
    counting starts (the pool is emptied, so none opened before is kept)."""
    registry = CollectorRegistry()
    count_statements(both_engines, registry)
    async with both_engines.begin() as connection:
        await connection.run_sync(metadata.create_all)
    await both_engines.dispose()
    return both_engines, registry


def sent(registry: CollectorRegistry) -> tuple[float, float]:
    """(statements, transaction statements) counted so far."""
    return (
        registry.get_sample_value("dealflow_db_statements_total") or 0.0,
        registry.get_sample_value("dealflow_db_transaction_statements_total") or 0.0,
    )


def work(engine: AsyncEngine) -> UnitOfWork:
    return UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW)


async def test_a_work_in_a_transaction_costs_a_begin_and_a_commit(
    counted: tuple[AsyncEngine, CollectorRegistry],
) -> None:
    engine, registry = counted
    statements, controls = sent(registry)
    async with work(engine) as uow:
        await uow.connection.execute(notes.insert().values(text="one"))
        await uow.connection.execute(notes.insert().values(text="two"))
        await uow.commit()
    assert sent(registry) == (statements + 2, controls + 2)


async def test_a_work_that_fails_costs_its_rollback(
    counted: tuple[AsyncEngine, CollectorRegistry],
) -> None:
    engine, registry = counted
    statements, controls = sent(registry)

    async def failing() -> None:
        async with work(engine) as uow:
            await uow.connection.execute(notes.insert().values(text="lost"))
            raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError):
        await failing()
    assert sent(registry) == (statements + 1, controls + 2)  # BEGIN, ROLLBACK


async def test_a_one_write_work_and_a_read_send_no_transaction_statement(
    counted: tuple[AsyncEngine, CollectorRegistry],
) -> None:
    engine, registry = counted
    statements, controls = sent(registry)
    async with work(engine).one_write() as uow:
        await uow.connection.execute(select(notes.c.id))
        deal = uuid.uuid4()
        uow.record(
            OpportunityNoteAdded(
                opportunity_id=deal,
                note_id=uuid.uuid4(),
                reason=NoteReason.GENERAL,
                text="alone",
                added_by="alice",
                added_at=NOW,
            )
        )
        await uow.commit()  # its outbox row is its one write: it commits by itself
    async with reading(engine) as connection:
        await connection.execute(select(notes.c.text))
    assert sent(registry) == (statements + 3, controls)
