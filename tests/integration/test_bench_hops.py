"""`bench.hops` reads each deal's saga times from the services' real outbox and inbox
tables on PostgreSQL: the deals asked for, each once, and none it lacks a time of."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.hops import (
    ACCEPTANCE_REQUESTED,
    ACCEPTED,
    WON,
    AcceptTimes,
    SeenOnKafka,
    accept_to_won_parts,
)
from dealflow_common.messaging.tables import create_messaging_tables
from dealflow_common.testing import new_schema_name

pytestmark = pytest.mark.integration

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
START_MS = START.timestamp() * 1000


def at(ms: float) -> datetime:
    return START + timedelta(milliseconds=ms)


@pytest.fixture
async def saga_schemas(database_url: str, schemas: list[str]) -> tuple[str, str]:
    names = (new_schema_name("hopsquote"), new_schema_name("hopsopportunity"))
    schemas.extend(names)
    engine = create_async_engine(database_url)
    try:
        for name in names:
            async with engine.begin() as connection:
                await connection.execute(text(f'CREATE SCHEMA "{name}"'))
                await connection.execute(text(f'SET LOCAL search_path TO "{name}"'))
                await connection.run_sync(create_messaging_tables)
    finally:
        await engine.dispose()
    return names


async def write(
    db: asyncpg.Connection, schema: str, event_type: str, subject: str, ms: float
) -> uuid.UUID:
    event_id = uuid.uuid4()
    await db.execute(
        f'INSERT INTO "{schema}".outbox (event_id, topic, subject, sequence, event_type,'
        " correlation_id, envelope, created_at) VALUES ($1, 't', $2, 1, $3, 'c', '{}', $4)",
        event_id,
        subject,
        event_type,
        at(ms),
    )
    return event_id


async def apply(
    db: asyncpg.Connection, schema: str, event_id: uuid.UUID, subject: str, ms: float
) -> None:
    await db.execute(
        f'INSERT INTO "{schema}".inbox (consumer_group, event_id, event_type, source, subject,'
        " applied_at) VALUES ('g', $1, 'e', 's', $2, $3)",
        event_id,
        subject,
        at(ms),
    )


async def test_each_deal_asked_for_is_read_once_and_a_deal_missing_a_time_is_left_out(
    database_url: str, saga_schemas: tuple[str, str]
) -> None:
    quote, opportunity = saga_schemas
    db = await asyncpg.connect(str(make_url(database_url).set(drivername="postgresql")))
    try:
        # "other" is a deal not asked for; "half" lacks its quote inbox row.
        for deal in ("whole", "other", "half"):
            requested = await write(db, quote, ACCEPTANCE_REQUESTED, deal, 5)
            await apply(db, opportunity, requested, deal, 45)
            won = await write(db, opportunity, WON, deal, 52)
            if deal != "half":
                await apply(db, quote, won, deal, 90)
            await write(db, quote, ACCEPTED, deal, 99)
        on_kafka = {
            ACCEPTANCE_REQUESTED: SeenOnKafka(START_MS + 15, START_MS + 16),
            WON: SeenOnKafka(START_MS + 60, START_MS + 61),
            ACCEPTED: SeenOnKafka(START_MS + 110, START_MS + 130),
        }
        result = await accept_to_won_parts(
            db,
            [AcceptTimes(deal, START_MS, on_kafka) for deal in ("whole", "half", "unknown")],
            quote_schema=quote,
            opportunity_schema=opportunity,
        )
    finally:
        await db.close()
    assert result["deals"] == 1
    assert result["ms"]["to opportunity"] == {"mean": 30.0, "p50": 30.0, "p99": 30.0}
    assert result["ms"]["in quote"] == {"mean": 9.0, "p50": 9.0, "p99": 9.0}
    assert sum(part["mean"] for part in result["ms"].values()) == pytest.approx(130)
