"""Wakes a request waiting for an opportunity this service has not heard of yet.

A client typically creates an opportunity and quotes it a moment later, before the
opportunity's events have reached this service. The request waits; the consumer of
this replica announces each opportunity it commits, so the wait ends at once. Another
replica's consumer may be the one that learns of it, so waiters also look again on
their own: after `recheck` seconds, then twice as long each time. Under load the event
can be a second or more away, and a look every quarter second cost a statement each.

A request expects the opportunity from before its first look: an announcement made
between that look and the wait is not missed, and the request need not look again before
it waits. An announcement comes after the consumer's commit, so it needs no look either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from uuid import UUID


class Arrival:
    """One request's expectation of one opportunity."""

    def __init__(self, recheck: float) -> None:
        self._announced = asyncio.Event()
        self._recheck = recheck

    async def wait(self, known: Callable[[], Awaitable[bool]], at_most: float) -> None:
        """Return once the opportunity is announced or `known()` holds (looked at after
        `recheck` seconds, then twice as long each time), or after `at_most` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        recheck = self._recheck
        while (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._announced.wait(), min(remaining, recheck))
                return
            if await known():
                return
            recheck *= 2


class OpportunityArrivals:
    def __init__(self, recheck: float = 0.25) -> None:
        self._expected: dict[UUID, set[asyncio.Event]] = {}
        self._recheck = recheck

    def announce(self, opportunity_id: UUID) -> None:
        for announced in self._expected.get(opportunity_id, ()):
            announced.set()

    @contextlib.contextmanager
    def expecting(self, opportunity_id: UUID) -> Iterator[Arrival]:
        """Expect the opportunity while the block runs (look, then `wait` if unknown)."""
        arrival = Arrival(self._recheck)
        expected = self._expected.setdefault(opportunity_id, set())
        expected.add(arrival._announced)
        try:
            yield arrival
        finally:
            expected.discard(arrival._announced)
            if not expected and self._expected.get(opportunity_id) is expected:
                del self._expected[opportunity_id]
