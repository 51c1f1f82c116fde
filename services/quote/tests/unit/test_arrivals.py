"""A quote request waiting for its opportunity wakes when the consumer learns of it."""

from __future__ import annotations

import asyncio
import uuid

from dealflow_quote.application.arrivals import OpportunityArrivals


async def test_an_announced_opportunity_ends_the_wait_at_once() -> None:
    arrivals = OpportunityArrivals(recheck=10.0)
    opportunity = uuid.uuid4()
    known = False

    async def is_known() -> bool:
        return known

    waiting = asyncio.create_task(arrivals.wait_for(opportunity, is_known, at_most=30.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    known = True
    arrivals.announce(opportunity)
    await asyncio.wait_for(waiting, 1.0)  # long before the 10 s recheck


async def test_an_opportunity_learned_elsewhere_is_found_by_rechecking() -> None:
    arrivals = OpportunityArrivals(recheck=0.01)
    checks = 0

    async def is_known() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 3

    await asyncio.wait_for(arrivals.wait_for(uuid.uuid4(), is_known, at_most=5.0), 1.0)
    assert checks == 3


async def test_an_unknown_opportunity_is_waited_for_at_most_the_limit() -> None:
    arrivals = OpportunityArrivals(recheck=0.01)

    async def never() -> bool:
        return False

    await asyncio.wait_for(arrivals.wait_for(uuid.uuid4(), never, at_most=0.05), 1.0)


async def test_rechecks_grow_further_apart() -> None:
    # A quarter of a second apart for good, a wait of a second or more under load cost a
    # statement every quarter: they double instead (0.01, 0.02, 0.04, ... here).
    arrivals = OpportunityArrivals(recheck=0.01)
    checks = 0

    async def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    await arrivals.wait_for(uuid.uuid4(), never, at_most=0.3)
    assert checks <= 7  # at an even 0.01 it would be about 30
