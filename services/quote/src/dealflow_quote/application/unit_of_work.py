"""The quote service's unit of work: one transaction with its repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.idempotency import RequestKeys
from dealflow_common.last_write import LastWrite
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.uow import UnitOfWork
from dealflow_quote.adapters.repository import (
    CatalogRepository,
    KnownOpportunities,
    QuoteCopies,
    QuoteRepository,
)
from dealflow_quote.adapters.tables import request_keys


class QuoteUnitOfWork(UnitOfWork):
    quotes: QuoteRepository
    catalog: CatalogRepository
    opportunities: KnownOpportunities
    request_keys: RequestKeys

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        clock: Callable[[], datetime],
        copies: QuoteCopies | None = None,
    ) -> None:
        super().__init__(engine, outbox, clock)
        self._copies = copies

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.opportunities = KnownOpportunities(self.connection, self._copies, self.served_copy)
        self.quotes = QuoteRepository(
            self.connection, self._copies, self.served_copy, self.opportunities
        )
        self.catalog = CatalogRepository(self.connection)
        self.request_keys = RequestKeys(self.connection, request_keys)
        self.before_commit(self.opportunities.write_held)
        return self

    async def commit(self, last: LastWrite | None = None) -> None:
        await super().commit(last)
        if self._copies is not None:
            self._copies.keep(
                self.quotes.written.values(),
                self.quotes.decided_on,
                [*self.opportunities.decided.values(), *self.quotes.decided_on.values()],
            )
