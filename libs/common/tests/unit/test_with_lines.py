"""A row and its lines are inserted together (one statement on PostgreSQL), exactly."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Uuid, exc, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.db import ExactDecimal
from dealflow_common.with_lines import InsertWithLines

metadata = MetaData()
papers = Table(
    "papers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("title", String(50), nullable=False),
)
paper_lines = Table(
    "paper_lines",
    metadata,
    Column("paper_id", Uuid, ForeignKey("papers.id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", Uuid),
    Column("amount", ExactDecimal, nullable=False),
)
PAPERS = InsertWithLines(papers, paper_lines, "paper_id")


def line(number: int, amount: str, product: uuid.UUID | None = None) -> dict[str, object]:
    return {"line_no": number, "product_id": product, "amount": Decimal(amount)}


async def test_a_row_and_any_number_of_lines_are_added_together(
    both_engines: AsyncEngine,
) -> None:
    async with both_engines.begin() as connection:
        await connection.run_sync(metadata.create_all)
    product = uuid.uuid4()
    added = {
        uuid.uuid4(): [],
        uuid.uuid4(): [line(1, "0.000001", product)],
        # One line is bound as values, not arrays, on PostgreSQL: a NULL among them too.
        uuid.uuid4(): [line(1, "7.10")],
        uuid.uuid4(): [line(1, "12345678901234.50"), line(2, "3"), line(3, "-1.25")],
    }
    async with both_engines.begin() as connection:
        for paper_id, lines in added.items():
            await PAPERS.add(connection, {"id": paper_id, "title": "t"}, lines)
    async with both_engines.connect() as connection:
        rows = (await connection.execute(select(paper_lines))).all()
        count = len((await connection.execute(select(papers.c.id))).all())
    assert count == 4
    found = {(r.paper_id, r.line_no): (r.product_id, r.amount) for r in rows}
    assert found == {
        (paper_id, entry["line_no"]): (entry["product_id"], entry["amount"])
        for paper_id, lines in added.items()
        for entry in lines
    }

    taken = next(iter(added))
    async with both_engines.connect() as connection:
        with pytest.raises(exc.IntegrityError):
            await PAPERS.add(connection, {"id": taken, "title": "again"}, [line(9, "1")])
        await connection.rollback()
        lines_of_taken = await connection.execute(
            select(paper_lines).where(paper_lines.c.paper_id == taken)
        )
        assert lines_of_taken.all() == []
