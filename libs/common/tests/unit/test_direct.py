"""Direct statements behave as `connection.execute` does: the same rows and types, the
same transaction, the same errors; on SQLite they are `connection.execute`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    TypeDecorator,
    Uuid,
    any_,
    bindparam,
    exc,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import ExactDecimal, JsonDocument, count_statements, reading
from dealflow_common.direct import DirectStatement

_metadata = MetaData()
_deals = Table(
    "direct_deals",
    _metadata,
    Column("id", Uuid, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("owners", JsonDocument, nullable=False),
    Column("amount", ExactDecimal, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("version", BigInteger, nullable=False),
)
_SELECT = select(_deals).where(_deals.c.id == bindparam("b_id"))
_DIRECT_SELECT = DirectStatement(_SELECT)
_INSERT = DirectStatement(insert(_deals))
_UPDATE = DirectStatement(update(_deals).where(_deals.c.id == bindparam("b_id")))


@pytest.fixture
async def deals(both_engines: AsyncEngine) -> AsyncEngine:
    async with both_engines.begin() as connection:
        await connection.run_sync(_metadata.create_all)
    return both_engines


def _deal(**changes: object) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "stage": "lead",
        "owners": ["ana", {"team": "north"}],
        "amount": Decimal("1000.10"),
        "closed_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        "version": 1,
        **changes,
    }


async def test_rows_read_directly_equal_those_sqlalchemy_reads(deals: AsyncEngine) -> None:
    deal = _deal()
    async with deals.begin() as connection:
        assert await _INSERT.rowcount(connection, deal) == 1
    async with deals.connect() as connection:
        direct = await _DIRECT_SELECT.first(connection, {"b_id": deal["id"]})
        through = (await connection.execute(_SELECT, {"b_id": deal["id"]})).one()
        await connection.rollback()
    assert direct is not None
    assert tuple(direct) == tuple(through)
    assert direct._mapping == dict(through._mapping)
    assert direct.owners == ["ana", {"team": "north"}]
    assert direct.amount == Decimal("1000.10")
    assert direct.id == deal["id"]


async def test_an_update_names_the_rows_it_changed(deals: AsyncEngine) -> None:
    deal = _deal()
    async with deals.begin() as connection:
        await _INSERT.rowcount(connection, deal)
        changed = await _UPDATE.rowcount(connection, {"stage": "proposal", "b_id": deal["id"]})
        missed = await _UPDATE.rowcount(connection, {"stage": "proposal", "b_id": uuid.uuid4()})
    assert (changed, missed) == (1, 0)
    async with deals.connect() as connection:
        row = await _DIRECT_SELECT.first(connection, {"b_id": deal["id"]})
        assert await _DIRECT_SELECT.first(connection, {"b_id": uuid.uuid4()}) is None
        await connection.rollback()
    assert row is not None
    assert (row.stage, row.version) == ("proposal", 1)


async def test_direct_writes_belong_to_the_transaction(deals: AsyncEngine) -> None:
    """The first statement of a transaction may be a direct one: it begins the same
    transaction SQLAlchemy then rolls back or commits."""
    kept, dropped = _deal(), _deal()
    async with deals.connect() as connection:
        await connection.begin()
        await _INSERT.rowcount(connection, dropped)
        await connection.execute(insert(_deals), _deal())  # SQLAlchemy, same transaction
        await connection.rollback()
        await _INSERT.rowcount(connection, kept)  # autobegins, as `execute` does
        await connection.commit()
    async with deals.connect() as connection:
        found = (await connection.execute(select(_deals.c.id))).scalars().all()
        await connection.rollback()
    assert found == [kept["id"]]


async def test_a_read_only_connection_reads_directly(deals: AsyncEngine) -> None:
    deal = _deal()
    async with deals.begin() as connection:
        await _INSERT.rowcount(connection, deal)
    async with reading(deals) as connection:
        row = await _DIRECT_SELECT.first(connection, {"b_id": deal["id"]})
        await connection.rollback()
    assert row is not None
    assert row.stage == "lead"


async def test_a_refusal_is_the_error_sqlalchemy_raises(deals: AsyncEngine) -> None:
    deal = _deal()
    async with deals.begin() as connection:
        await _INSERT.rowcount(connection, deal)
    async with deals.connect() as connection:
        await connection.begin()
        with pytest.raises(exc.IntegrityError) as raised:
            await _INSERT.rowcount(connection, deal)
        await connection.rollback()
    code = getattr(raised.value.orig, "sqlstate", None) or getattr(
        raised.value.orig, "sqlite_errorcode", None
    )
    assert code in ("23505", 1555)  # unique violation (PostgreSQL), primary key (SQLite)


async def test_a_list_parameter_is_refused_where_statements_run_directly(
    deals: AsyncEngine,
) -> None:
    """A list given with each run renders a placeholder per item, so its SQL changes
    with the list's length: PostgreSQL refuses it (an array does the same); SQLite runs
    it through SQLAlchemy. A list the statement holds is the same on every run: it runs."""
    given = DirectStatement(
        select(_deals.c.id).where(_deals.c.stage.in_(bindparam("b_stages", expanding=True)))
    )
    held = DirectStatement(select(_deals.c.id).where(_deals.c.stage.in_(["lead", "won"])))
    as_array = DirectStatement(
        select(_deals.c.id).where(_deals.c.stage == any_(postgresql.array(["lead", "won"])))
    )
    deal = _deal()
    async with deals.begin() as connection:
        await _INSERT.rowcount(connection, deal)
        assert [row.id for row in await held.all(connection, {})] == [deal["id"]]
        if deals.dialect.name == "postgresql":
            with pytest.raises(exc.ArgumentError, match="list or callable"):
                await given.all(connection, {"b_stages": ["lead", "won"]})
            assert [row.id for row in await as_array.all(connection, {})] == [deal["id"]]
        else:
            found = await given.all(connection, {"b_stages": ["lead", "won"]})
            assert [row.id for row in found] == [deal["id"]]


class _Lowered(TypeDecorator[str]):
    """A type of ours that changes what it binds: its arrays must keep their processing."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.lower()


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_arrays_bind_as_through_sqlalchemy(deals: AsyncEngine) -> None:
    """An array whose items the dialect binds as they are goes to the driver as given
    (a list or a tuple); one whose items have a type of ours is still processed item by
    item."""
    by_ids = DirectStatement(
        select(_deals.c.id).where(
            _deals.c.id == any_(bindparam("b_ids", type_=postgresql.ARRAY(Uuid)))
        )
    )
    by_stages = DirectStatement(
        select(_deals.c.id).where(
            _deals.c.stage == any_(bindparam("b_stages", type_=postgresql.ARRAY(_Lowered)))
        )
    )
    first, second = _deal(), _deal(stage="won")
    async with deals.begin() as connection:
        await _INSERT.each(connection, [first, second])
        for ids in ([first["id"], uuid.uuid4()], (first["id"],)):
            found = [row.id for row in await by_ids.all(connection, {"b_ids": ids})]
            through = (await connection.execute(by_ids.statement, {"b_ids": ids})).scalars()
            assert found == list(through) == [first["id"]]
        found = [row.id for row in await by_stages.all(connection, {"b_stages": ["WON"]})]
        assert found == [second["id"]]


# PostgreSQL only: SQLite has no server connection to lose.
@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_lost_connection_is_invalidated_and_the_pool_recovers(deals: AsyncEngine) -> None:
    """A direct statement on a connection the server dropped fails as SQLAlchemy's own
    statements do (a DBAPIError with `connection_invalidated`, which the consumers
    retry), and the next unit of work gets a working connection."""
    async with deals.connect() as victim:
        await victim.begin()
        pid = (await victim.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        async with deals.connect() as killer:
            await killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            await killer.commit()
        with pytest.raises(exc.DBAPIError) as raised:
            await _DIRECT_SELECT.first(victim, {"b_id": uuid.uuid4()})
        assert raised.value.connection_invalidated
        await victim.rollback()
    deal = _deal()
    async with deals.begin() as connection:
        await _INSERT.rowcount(connection, deal)
    async with deals.connect() as connection:
        assert await _DIRECT_SELECT.first(connection, {"b_id": deal["id"]}) is not None
        await connection.rollback()


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_after_one_lost_connection_the_pool_hands_out_none_of_its_older_ones(
    deals: AsyncEngine,
) -> None:
    """When the database dropped every session (a restart, a purge of its connections),
    the first direct statement to fail invalidates the whole pool, as SQLAlchemy does:
    the units of work after it get fresh connections instead of failing one by one."""
    held = [await deals.connect() for _ in range(3)]
    pids = [(await c.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one() for c in held]
    for connection in held:
        await connection.rollback()
        await connection.close()  # back in the pool
    killer = await asyncpg.connect(
        deals.url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        for pid in pids:
            await killer.execute(f"SELECT pg_terminate_backend({int(pid)})")
    finally:
        await killer.close()
    with pytest.raises(exc.DBAPIError):
        async with deals.connect() as connection:
            await _DIRECT_SELECT.first(connection, {"b_id": uuid.uuid4()})
    for _ in range(3):
        async with deals.connect() as connection:
            assert await _DIRECT_SELECT.first(connection, {"b_id": uuid.uuid4()}) is None
            await connection.rollback()


async def test_direct_statements_are_counted_with_the_others(deals: AsyncEngine) -> None:
    """`make bench` reports statements per deal from this counter."""
    registry = CollectorRegistry()
    count_statements(deals, registry)
    async with deals.begin() as connection:
        await connection.execute(select(_deals.c.id))  # SQLite's BEGIN is a statement too
        before = registry.get_sample_value("dealflow_db_statements_total")
        await _INSERT.rowcount(connection, _deal())
        await _DIRECT_SELECT.first(connection, {"b_id": uuid.uuid4()})
        await connection.execute(select(_deals.c.id))
    assert registry.get_sample_value("dealflow_db_statements_total") == (before or 0) + 3


async def test_several_parameter_sets_run_in_one_statement(deals: AsyncEngine) -> None:
    """`each` with several sets is one `executemany` (one round trip, counted once); a
    refusal among them is SQLAlchemy's error, and nothing of the statement stays."""
    registry = CollectorRegistry()
    count_statements(deals, registry)
    rows = [_deal(stage=stage) for stage in ("lead", "proposal", "closed_won")]
    async with deals.begin() as connection:
        await connection.execute(select(_deals.c.id))  # SQLite's BEGIN is a statement too
        before = registry.get_sample_value("dealflow_db_statements_total") or 0
        await _INSERT.each(connection, rows)
        assert registry.get_sample_value("dealflow_db_statements_total") == before + 1
        await _UPDATE.each(connection, [{"b_id": row["id"], "stage": "lost"} for row in rows[:2]])
    async with deals.connect() as connection:
        found = {r.id: r.stage for r in await connection.execute(select(_deals))}
    assert found == {rows[0]["id"]: "lost", rows[1]["id"]: "lost", rows[2]["id"]: "closed_won"}
    again = [_deal(), rows[0]]
    async with deals.connect() as connection:
        with pytest.raises(exc.IntegrityError):
            await _INSERT.each(connection, again)
        await connection.rollback()
        assert (
            await connection.scalar(select(_deals.c.id).where(_deals.c.id == again[0]["id"]))
            is None
        )
