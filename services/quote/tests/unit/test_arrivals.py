"""A quote request waiting for its opportunity wakes when the consumer learns of it."""

from __future__ import annotations

import asyncio
import uuid

from dealflow_quote.application.arrivals import OpportunityArrivals


async def test_an_announced_opportunity_ends_the_wait_at_once_without_a_look() -> None:
    arrivals = OpportunityArrivals(recheck=10.0)
    opportunity = uuid.uuid4()
    looks = 0

    async def is_known() -> bool:
        nonlocal looks
        looks += 1
        return False

    with arrivals.expecting(opportunity) as arrival:
        waiting = asyncio.create_task(arrival.wait(is_known, at_most=30.0))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        arrivals.announce(opportunity)
        await asyncio.wait_for(waiting, 1.0)  # long before the 10 s recheck
    assert looks == 0  # the consumer announces what it has committed


async def test_an_announcement_before_the_wait_is_not_missed() -> None:
    # Made between the request's first look and its wait: it was expected since before.
    arrivals = OpportunityArrivals(recheck=10.0)
    opportunity = uuid.uuid4()

    async def never() -> bool:
        return False

    with arrivals.expecting(opportunity) as arrival:
        arrivals.announce(opportunity)
        await asyncio.wait_for(arrival.wait(never, at_most=30.0), 1.0)


async def test_every_request_expecting_the_opportunity_is_woken() -> None:
    arrivals = OpportunityArrivals(recheck=10.0)
    opportunity = uuid.uuid4()

    async def never() -> bool:
        return False

    with arrivals.expecting(opportunity) as first, arrivals.expecting(opportunity) as second:
        waits = asyncio.gather(first.wait(never, 30.0), second.wait(never, 30.0))
        await asyncio.sleep(0.01)
        arrivals.announce(opportunity)
        await asyncio.wait_for(waits, 1.0)


async def test_an_opportunity_learned_elsewhere_is_found_by_rechecking() -> None:
    arrivals = OpportunityArrivals(recheck=0.01)
    checks = 0

    async def is_known() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 3

    with arrivals.expecting(uuid.uuid4()) as arrival:
        await asyncio.wait_for(arrival.wait(is_known, at_most=5.0), 1.0)
    assert checks == 3


async def test_an_unknown_opportunity_is_waited_for_at_most_the_limit() -> None:
    arrivals = OpportunityArrivals(recheck=0.01)

    async def never() -> bool:
        return False

    with arrivals.expecting(uuid.uuid4()) as arrival:
        await asyncio.wait_for(arrival.wait(never, at_most=0.05), 1.0)


async def test_rechecks_grow_further_apart() -> None:
    # A quarter of a second apart for good, a wait of a second or more under load cost a
    # statement every quarter: they double instead (0.01, 0.02, 0.04, ... here).
    arrivals = OpportunityArrivals(recheck=0.01)
    checks = 0

    async def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    with arrivals.expecting(uuid.uuid4()) as arrival:
        await arrival.wait(never, at_most=0.3)
    assert 1 <= checks <= 7  # at an even 0.01 it would be about 30


async def test_nothing_is_left_expected_after_the_request() -> None:
    arrivals = OpportunityArrivals()
    opportunity = uuid.uuid4()
    with arrivals.expecting(opportunity), arrivals.expecting(opportunity):
        pass
    arrivals.announce(opportunity)  # nobody to wake
    assert not arrivals._expected
