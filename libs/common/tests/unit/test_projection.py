"""A projection moves forward only, field by field, whatever order its events arrive in."""

from __future__ import annotations

import itertools
import uuid

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, MetaData, String, Table, Uuid, exc, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import count_statements
from dealflow_common.messaging.projection import (
    AppliedSequences,
    ForeignSource,
    HeldRows,
    ProjectionRows,
)

SOURCE = "/dealflow/opportunity"

# A deal's events as (sequence, fields carried with their values): partial, like
# opportunity.stage_changed (stage, owners) or opportunity.assigned (owners, team).
EVENTS: list[tuple[int, dict[str, object]]] = [
    (1, {"stage": "lead", "owners": ["alice"], "team_id": "emea"}),
    (2, {"stage": "proposal", "owners": ["alice"]}),
    (3, {"owners": ["alice", "bob"], "team_id": "apac"}),
    (4, {"stage": "closed_lost"}),
]


@pytest.fixture
def engine(both_engines: AsyncEngine) -> AsyncEngine:
    """Each dialect has its own statements here: every test runs on both."""
    return both_engines


def project(events: list[tuple[int, dict[str, object]]]) -> dict[str, object]:
    row: dict[str, object] = {}
    applied = AppliedSequences()
    for sequence, carried in events:
        verdict = applied.offer(source=SOURCE, sequence=sequence, carried=carried)
        row.update({name: carried[name] for name in verdict.fields})
        applied = verdict.applied
    return row


def test_an_event_sets_every_field_it_carries_on_a_new_row() -> None:
    verdict = AppliedSequences().offer(source=SOURCE, sequence=3, carried=["stage", "owners"])
    assert verdict.fields == {"stage", "owners"}
    assert verdict.applied == AppliedSequences(SOURCE, {"stage": 3, "owners": 3})


def test_an_older_event_sets_only_the_fields_no_newer_event_set() -> None:
    applied = AppliedSequences(SOURCE, {"stage": 5, "owners": 5, "team_id": 3})
    verdict = applied.offer(source=SOURCE, sequence=4, carried=["owners", "team_id"])
    assert verdict.fields == {"team_id"}
    assert verdict.applied.by_field == {"stage": 5, "owners": 5, "team_id": 4}


def test_the_same_sequence_again_sets_nothing() -> None:
    applied = AppliedSequences(SOURCE, {"stage": 5})
    verdict = applied.offer(source=SOURCE, sequence=5, carried=["stage"])
    assert verdict.fields == frozenset()
    assert verdict.applied == applied


def test_a_late_event_never_moves_a_field_back() -> None:
    in_order = project(EVENTS)
    late = project([EVENTS[0], EVENTS[3], EVENTS[1]])
    assert late["stage"] == in_order["stage"] == "closed_lost"


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(EVENTS)))))
def test_any_arrival_order_leaves_the_same_projection(order: tuple[int, ...]) -> None:
    assert project([EVENTS[i] for i in order]) == project(EVENTS)


def test_re_sent_events_change_nothing() -> None:
    assert project([EVENTS[0], EVENTS[1], EVENTS[3], EVENTS[2], EVENTS[3], EVENTS[1]]) == (
        project(EVENTS)
    )


def test_sequences_of_another_source_are_not_compared() -> None:
    applied = AppliedSequences(SOURCE, {"stage": 5})
    with pytest.raises(ForeignSource, match="/dealflow/elsewhere"):
        applied.offer(source="/dealflow/elsewhere", sequence=9, carried=["stage"])


def test_the_row_form_reads_back_and_a_row_without_it_is_empty() -> None:
    applied = AppliedSequences(SOURCE, {"team_id": 4, "stage": 5})
    assert AppliedSequences.from_document(applied.to_document()) == applied
    assert AppliedSequences.from_document(None) == AppliedSequences()
    verdict = AppliedSequences.from_document(None).offer(
        source=SOURCE, sequence=1, carried=["stage"]
    )
    assert verdict.fields == {"stage"}


async def test_projection_rows_add_once_then_lock_read_and_save(engine: AsyncEngine) -> None:
    """The storage every service's projection shares: `lock_or_add` adds a row only when
    absent (a second call keeps what was saved), `save` writes all but the key."""
    metadata = MetaData()
    table = Table(
        "known_things",
        metadata,
        Column("thing_id", String(10), primary_key=True),
        Column("name", String(20), nullable=False),
    )
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    rows = ProjectionRows(table, key="thing_id")
    async with engine.begin() as connection:
        added = await rows.lock_or_add(connection, {"thing_id": "a", "name": "unseen"})
        assert added.name == "unseen"
        await rows.save(connection, {"thing_id": "a", "name": "learnt"})
        again = await rows.lock_or_add(connection, {"thing_id": "a", "name": "unseen"})
        assert again.name == "learnt"
        assert await rows.get(connection, "b") is None
        assert (await rows.get(connection, "a", share=True)).name == "learnt"  # type: ignore[union-attr]


async def test_a_batchs_rows_are_locked_in_one_statement_and_written_back_in_one(
    engine: AsyncEngine,
) -> None:
    """`lock_ahead` locks a batch's rows in one statement and holds them (PostgreSQL;
    SQLite's writers are serialised and nothing is held). Reads and saves of a held row
    cost no statement, a later read sees the save, and `write_held` inserts the rows
    the batch added in one round trip and writes every save in another; a row not held
    is read and written at once."""
    table = await _deals_table(engine, "known_deals_held")
    rows = ProjectionRows(table)
    a, b, new, other = (uuid.uuid4() for _ in range(4))
    async with engine.begin() as connection:
        await connection.execute(
            table.insert(),
            [
                {"id": a, "name": "a", "stage": "lead"},
                {"id": b, "name": "b", "stage": "lead"},
                {"id": other, "name": "other", "stage": "lead"},
            ],
        )
    registry = CollectorRegistry()
    count_statements(engine, registry)

    def statements() -> float:
        return registry.get_sample_value("dealflow_db_statements_total") or 0

    async def stored(key: uuid.UUID) -> tuple[str, str] | None:
        async with engine.connect() as reader:
            found = (await reader.execute(select(table).where(table.c.id == key))).first()
            return None if found is None else (found.name, found.stage)

    held = HeldRows()
    async with engine.begin() as connection:
        before = statements()
        await rows.lock_ahead(connection, [a, b, new, a], held)
        if engine.dialect.name == "sqlite":
            assert held.rows == {}
            return
        assert statements() == before + 1
        assert {key: row and row.name for key, row in held.rows.items()} == {
            a: "a",
            b: "b",
            new: None,
        }
        await _refused_elsewhere(engine, table, a)  # locked until this transaction ends

        before = statements()
        found = await rows.lock_or_add(connection, {"id": a, "name": "?", "stage": "?"}, held)
        assert (found.name, found.stage) == ("a", "lead")
        await rows.save(connection, {"id": a, "name": "learnt", "stage": "won"}, held)
        await rows.save(connection, {"id": b, "name": "b", "stage": "proposal"}, held)
        again = await rows.lock_or_add(connection, {"id": a, "name": "?", "stage": "?"}, held)
        assert (again.name, again.stage) == ("learnt", "won")  # a later event sees the save
        assert (await rows.get(connection, b, held=held)).stage == "proposal"  # type: ignore[union-attr]
        assert statements() == before  # held: nothing read or written yet
        assert await stored(a) == ("a", "lead")
        before = statements()  # (reading it from elsewhere counted one)

        added = await rows.lock_or_add(connection, {"id": new, "name": "n", "stage": "lead"}, held)
        assert added.name == "n"
        assert statements() == before  # known to be absent: added in memory
        await rows.save(connection, {"id": new, "name": "n", "stage": "qualification"}, held)
        assert (await rows.get(connection, new, held=held)).stage == "qualification"  # type: ignore[union-attr]
        await rows.save(connection, {"id": other, "name": "other", "stage": "lost"}, held)
        assert statements() == before + 1  # `other` is not held: written at once
        assert await stored(new) is None
        before = statements()  # (reading it from elsewhere counted one)

        await rows.write_held(connection, held)
        # The row added, as it ended up, in one round trip; the two held saves in one.
        assert statements() == before + 2
        assert held.unwritten == {}
        assert held.unadded == {}
    assert await stored(a) == ("learnt", "won")
    assert await stored(b) == ("b", "proposal")
    assert await stored(new) == ("n", "qualification")
    assert await stored(other) == ("other", "lost")


@pytest.mark.parametrize("both_engines", ["postgresql"], indirect=True)
async def test_a_row_another_transaction_added_since_the_batch_locked_fails_the_batch(
    both_engines: AsyncEngine,
) -> None:
    """A key absent when the batch locked its rows has nothing to lock. If another
    transaction (a replica during a rebalance) adds it before the batch writes, the
    batch's insert fails on the key instead of overwriting that row or merging into a
    copy that never saw it; the consumer then applies the events one by one, and a
    second attempt finds the row and locks it."""
    engine = both_engines  # SQLite holds no rows: every row is added at once (above)
    table = await _deals_table(engine, "known_deals_raced")
    rows = ProjectionRows(table)
    key = uuid.uuid4()
    held = HeldRows()
    async with engine.connect() as connection, connection.begin():
        await rows.lock_ahead(connection, [key], held)
        await rows.lock_or_add(connection, {"id": key, "name": "mine", "stage": "lead"}, held)
        async with engine.begin() as elsewhere:
            theirs = {"id": key, "name": "theirs", "stage": "won"}
            await elsewhere.execute(table.insert(), theirs)
        with pytest.raises(exc.IntegrityError):
            await rows.write_held(connection, held)

    async with engine.begin() as connection:  # the second attempt
        again = HeldRows()
        await rows.lock_ahead(connection, [key], again)
        found = await rows.lock_or_add(connection, {"id": key, "name": "?", "stage": "?"}, again)
        assert (found.name, found.stage) == ("theirs", "won")


async def _deals_table(engine: AsyncEngine, name: str) -> Table:
    """A projection table of deals keyed by id, created on `engine`."""
    metadata = MetaData()
    table = Table(
        name,
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("name", String(20), nullable=False),
        Column("stage", String(20), nullable=False),
    )
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return table


async def _refused_elsewhere(engine: AsyncEngine, table: Table, key: uuid.UUID) -> None:
    async with engine.connect() as other:
        with pytest.raises(exc.DBAPIError, match="could not obtain lock"):
            await other.execute(select(table).where(table.c.id == key).with_for_update(nowait=True))
