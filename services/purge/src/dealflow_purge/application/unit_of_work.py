"""The purge service's unit of work: one transaction with its store."""

from __future__ import annotations

from typing import Self

from dealflow_common.uow import UnitOfWork
from dealflow_purge.adapters.store import PurgeStore


class PurgeUnitOfWork(UnitOfWork):
    store: PurgeStore

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.store = PurgeStore(self.connection)
        self.before_commit(self.store.write_held)
        return self
