"""Reads of the quote service, filtered by what the caller may see.

Every read runs on a `READ_ONLY` connection: on SQLite it then starts with a plain
`BEGIN` and never waits for, nor blocks, the one writer.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.contracts.quote import QuoteStatus
from dealflow_common.db import reading
from dealflow_quote.adapters.repository import CatalogRepository, KnownOpportunities, QuoteQueries
from dealflow_quote.domain import access
from dealflow_quote.domain.catalog import Bundle, Product
from dealflow_quote.domain.errors import QuoteNotFound
from dealflow_quote.domain.model import Quote


class QuoteReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    async def get(self, quote_id: UUID, viewer: Principal) -> Quote:
        async with self._read() as connection:
            quote = await QuoteQueries(connection).find(quote_id)
            deal = await KnownOpportunities(connection).get(quote.opportunity_id) if quote else None
        if quote is None or deal is None:
            raise QuoteNotFound(quote_id)
        if not access.can_view(deal, viewer):
            raise QuoteNotFound(quote_id).unseen()
        return quote

    async def workable(self, quote_id: UUID, worker: Principal) -> Quote:
        """The quote, when the caller may work on its deal (404 unseen, 403 read only)."""
        async with self._read() as connection:
            quote = await QuoteQueries(connection).find(quote_id)
            deal = await KnownOpportunities(connection).get(quote.opportunity_id) if quote else None
        if quote is None or deal is None:
            raise QuoteNotFound(quote_id)
        if not access.can_view(deal, worker):
            raise QuoteNotFound(quote_id).unseen()
        access.require_deal_work(deal, worker)
        return quote

    async def knows_opportunity(self, opportunity_id: UUID) -> bool:
        """Whether this service has heard of the opportunity (for anyone, visible or not)."""
        async with self._read() as connection:
            return await KnownOpportunities(connection).get(opportunity_id) is not None

    async def awaiting_answer(
        self, requested_before: datetime, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Quote]:
        """Quotes awaiting the opportunity's answer to an acceptance made before
        `requested_before`, longest waiting first (for operators: every deal, no lines)."""
        async with self._read() as connection:
            return await QuoteQueries(connection).awaiting_answer_since(
                requested_before, after, limit
            )

    async def for_link(self, quote_id: UUID, opportunity_id: UUID) -> Quote:
        async with self._read() as connection:
            quote = await QuoteQueries(connection).find(quote_id)
        if quote is None or quote.opportunity_id != opportunity_id:
            raise QuoteNotFound(quote_id)
        return quote

    async def of_opportunity(
        self, opportunity_id: UUID, status: QuoteStatus | None, viewer: Principal
    ) -> list[Quote]:
        async with self._read() as connection:
            deal = await KnownOpportunities(connection).get(opportunity_id)
            if deal is None or not access.can_view(deal, viewer):
                return []
            return await QuoteQueries(connection).of_opportunity(opportunity_id, status)

    async def products(self, include_retired: bool) -> list[Product]:
        async with self._read() as connection:
            return await CatalogRepository(connection).product_list(include_retired)

    async def product(self, product_id: UUID) -> Product:
        async with self._read() as connection:
            return await CatalogRepository(connection).product(product_id)

    async def bundles(self, include_retired: bool) -> list[Bundle]:
        async with self._read() as connection:
            return await CatalogRepository(connection).bundle_list(include_retired)

    async def bundle(self, bundle_id: UUID) -> Bundle:
        async with self._read() as connection:
            return await CatalogRepository(connection).bundle(bundle_id)
