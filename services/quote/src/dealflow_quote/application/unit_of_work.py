"""The quote service's unit of work: one transaction with its repositories."""

from __future__ import annotations

from typing import Self

from dealflow_common.idempotency import RequestKeys
from dealflow_common.uow import UnitOfWork
from dealflow_quote.adapters.repository import (
    CatalogRepository,
    KnownOpportunities,
    QuoteRepository,
)
from dealflow_quote.adapters.tables import request_keys


class QuoteUnitOfWork(UnitOfWork):
    quotes: QuoteRepository
    catalog: CatalogRepository
    opportunities: KnownOpportunities
    request_keys: RequestKeys

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.quotes = QuoteRepository(self.connection)
        self.catalog = CatalogRepository(self.connection)
        self.opportunities = KnownOpportunities(self.connection)
        self.request_keys = RequestKeys(self.connection, request_keys)
        self.before_commit(self.opportunities.write_held)
        return self
