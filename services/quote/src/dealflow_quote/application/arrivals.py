"""Wakes a request waiting for an opportunity this service has not heard of yet.

A client typically creates an opportunity and quotes it a moment later, before the
opportunity's events have reached this service. The request waits; the consumer of
this replica announces each opportunity it commits, so the wait ends at once. Another
replica's consumer may be the one that learns of it, so waiters also look again on
their own: after `recheck` seconds, then twice as long each time. Under load the event
can be a second or more away, and a look every quarter second cost a statement each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from uuid import UUID


class OpportunityArrivals:
    def __init__(self, recheck: float = 0.25) -> None:
        self._waiting: dict[UUID, asyncio.Event] = {}
        self._recheck = recheck

    def announce(self, opportunity_id: UUID) -> None:
        arrived = self._waiting.get(opportunity_id)
        if arrived is not None:
            arrived.set()

    async def wait_for(
        self, opportunity_id: UUID, known: Callable[[], Awaitable[bool]], at_most: float
    ) -> None:
        """Return once `known()` holds, or after `at_most` seconds."""
        if await known() or at_most <= 0:
            return
        arrived = self._waiting.setdefault(opportunity_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        recheck = self._recheck
        try:
            while (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), min(remaining, recheck))
                if await known():
                    return
                arrived.clear()
                recheck *= 2
        finally:
            if self._waiting.get(opportunity_id) is arrived:
                del self._waiting[opportunity_id]
