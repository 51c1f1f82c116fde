"""Full-text search over a deal's title, description, customer name and notes.

Each deal has one search document (`opportunity_search`), rewritten in the transaction
that changes what it is made of, so a search never sees a deal as it no longer is.
PostgreSQL indexes it as a `tsvector` (GIN); SQLite, the embedded run, through an FTS5
table that triggers keep in step with it (migration 0006). Both use no stemming and no
stop words (`simple`, `unicode61`), so the two back ends find the same deals: every word
of the query must be a word of the document, the last one may be its beginning.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Text,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.db import is_postgres
from dealflow_common.direct import DirectStatement
from dealflow_opportunity.adapters.tables import notes, opportunity_search
from dealflow_opportunity.domain.model import Opportunity

# Letters and digits; both back ends split words at "_" and punctuation too.
_WORD = re.compile(r"[^\W_]+")
MAX_TERMS = 20
_SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")


def terms_of(query: str) -> list[str]:
    """The words a query looks for; empty when it has none."""
    return _WORD.findall(query.lower())[:MAX_TERMS]


def deal_text(opportunity: Opportunity) -> str:
    return "\n".join(
        part
        for part in (opportunity.title, opportunity.description, opportunity.customer.name)
        if part
    )


def _document(opportunity_id: Any, text_of_deal: Any) -> ColumnElement[str]:
    notes_text = (
        select(func.aggregate_strings(notes.c.text, "\n"))
        .where(notes.c.opportunity_id == opportunity_id)
        .scalar_subquery()
    )
    return text_of_deal + "\n" + func.coalesce(notes_text, "")


class SearchIndex:
    """Keeps each deal's search document; the repository calls it when the deal's
    text or notes changed."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._postgres = is_postgres(connection)

    async def add(self, opportunity: Opportunity) -> None:
        add, _ = _writes(self._postgres)
        await add.rowcount(
            self._connection, {"b_id": opportunity.id, "b_text": deal_text(opportunity)}
        )

    async def refresh(self, opportunity: Opportunity) -> None:
        _, refresh = _writes(self._postgres)
        await refresh.rowcount(
            self._connection, {"b_id": opportunity.id, "b_text": deal_text(opportunity)}
        )


def new_deal_document(deal_id: ColumnElement[Any]) -> Insert:
    """PostgreSQL: the search document of the deal being inserted (`deal_id`, a column of
    the insert's CTE), its text bound as `s_text`; it goes with the deal's insert
    (`repository.add_at_commit`). What `SearchIndex.add` writes: a new deal has no notes."""
    document = _document(deal_id, bindparam("s_text", type_=Text))
    return insert(opportunity_search).from_select(
        ["opportunity_id", "document", "search_vector"],
        select(deal_id, document, func.to_tsvector(_SIMPLE, document)),
    )


@functools.cache
def _writes(postgres: bool) -> tuple[DirectStatement, DirectStatement]:
    """(add, refresh) of a deal's search document, built once, run directly (every deal
    created adds one)."""
    document = _document(bindparam("b_id"), bindparam("b_text"))
    values: dict[str, Any] = {"document": document}
    if postgres:
        values["search_vector"] = func.to_tsvector(_SIMPLE, document)
    add = insert(opportunity_search).values(opportunity_id=bindparam("b_id"), **values)
    refresh = (
        opportunity_search.update()
        .where(opportunity_search.c.opportunity_id == bindparam("b_id"))
        .values(**values)
    )
    return DirectStatement(add), DirectStatement(refresh)


def matching(terms: list[str], postgres: bool) -> Any:
    """A select of the ids of the deals whose document holds every term; the last may
    be the beginning of a word (the query is read as typed: `fleet ren` finds "Fleet
    renewal"), the others are whole words, so that `deal 3` does not find "deal 30"."""
    if postgres:
        # Terms are letters and digits only, so quoting them cannot break the tsquery syntax.
        tsquery = " & ".join([*(f"'{t}'" for t in terms[:-1]), f"'{terms[-1]}':*"])
        return select(opportunity_search.c.opportunity_id).where(
            opportunity_search.c.search_vector.op("@@")(func.to_tsquery(_SIMPLE, tsquery))
        )
    fts_query = " ".join([*(f'"{t}"' for t in terms[:-1]), f'"{terms[-1]}"*'])
    rowids = (
        text(
            "SELECT rowid FROM opportunity_search_fts "
            "WHERE opportunity_search_fts MATCH :b_fts_query"
        )
        .bindparams(b_fts_query=fts_query)
        .columns(column("rowid", Integer))
        .subquery()
    )
    return select(opportunity_search.c.opportunity_id).where(
        literal_column("opportunity_search.rowid").in_(select(rowids.c.rowid))
    )
