"""A read model cleared and replayed gives the same figures, in any arrival order.

`dealflow-reporting rebuild` clears the read model and applies every event again from
offset 0 (tests/integration/test_reporting.py runs it on the real broker). Here the
same events are applied again after the clearing, in reverse order: the figures are
the same, because the read model does not depend on the order events arrive in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import Share, ShareGrant, Stage
from dealflow_reporting.adapters.reports import clear_read_model
from dealflow_reporting.application.projection import CONSUMER_GROUP

from .conftest import Reporting

REPORTS = [
    "/pipeline?as_of=2026-12-01",
    "/forecast?period=month&by=owner&as_of=2026-12-01",
    "/forecast?period=quarter&by=team&as_of=2026-12-01",
    "/analytics?period=quarter&by=owner&as_of=2026-12-01",
    "/analytics?by=team&as_of=2026-12-01",
    "/customers/acme/deals",
]


DAN = {"user": "dan", "roles": ("rep",), "teams": ()}
"""Sees only the deals shared with him: his figures come from the shares alone."""


async def figures(service: Reporting) -> list[Any]:
    return [await service.get(path) for path in REPORTS] + [
        await service.get(path, **DAN) for path in (REPORTS[0], REPORTS[1], REPORTS[-1])
    ]


async def live_deals(service: Reporting) -> list[tuple[Any, int, uuid.UUID]]:
    """Six deals' lives, applied one event at a time: each event delivered, with its
    sequence and id."""
    delivered: list[tuple[Any, int, uuid.UUID]] = []
    consume = service.consume

    async def recording(*payloads: Any, **options: Any) -> None:
        for payload in payloads:
            number = service.sequences[payload.subject] + 1
            event_id = uuid.uuid4()
            delivered.append((payload, number, event_id))
            await consume(payload, sequence=number, event_id=event_id)

    service.consume = recording  # type: ignore[method-assign]
    await service.set_rates(("EUR", "USD", "2026-01-01", "1.2"))
    july = datetime(2026, 7, 1, tzinfo=UTC)
    for number in range(6):
        deal = await service.deal(
            f"{100 * (number + 1)}.00",
            "EUR" if number % 2 else "USD",
            owners=("ann",) if number % 3 else ("bob", "ann"),
            team_id="emea" if number < 3 else "apac",
            expected_close_date=date(2026, 7 + number, 1),
        )
        await service.move(deal, Stage.QUALIFICATION, Stage.PROPOSAL)
        if number in (1, 2):
            # Shared with dan; the second deal's share is revoked again.
            to_dan = Share(kind="user", id="dan", grant=ShareGrant.READ)
            await service.share(deal, to_dan, to_dan)
            if number == 2:
                await service.unshare(deal, to_dan)
        if number == 4:
            await service.win(deal, july, Money.of("450.00", "EUR"), Stage.PROPOSAL)
        if number == 5:
            await service.lose(deal, july, "budget", Stage.PROPOSAL)
    await service.assign_team(deal, "latam")
    service.consume = consume  # type: ignore[method-assign]
    return delivered


async def cleared(service: Reporting) -> None:
    async with service.engine.begin() as connection:
        await clear_read_model(connection, CONSUMER_GROUP)
    assert (await service.get(REPORTS[0]))["total"]["deals"] == 0


async def test_replaying_the_events_in_reverse_after_clearing_gives_the_same_figures(
    service: Reporting,
) -> None:
    delivered = await live_deals(service)
    live = await figures(service)

    await cleared(service)
    for payload, number, event_id in reversed(delivered):
        await service.consume(payload, sequence=number, event_id=event_id)

    assert await figures(service) == live
    assert live[0]["total"]["deals"] == 4
    assert live[len(REPORTS)]["total"]["deals"] == 1  # dan's pipeline: the deal shared


async def test_the_events_applied_as_one_batch_give_the_same_figures(
    service: Reporting, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch's deals are locked ahead in one statement and each row is handed out
    once: a deal's later events in the same batch must see what its earlier ones wrote,
    in either order, both for deals the batch adds and for deals it finds."""
    delivered = await live_deals(service)
    live = await figures(service)
    firsts = {payload.subject: (payload, n, i) for payload, n, i in reversed(delivered)}
    for order in (delivered, delivered[::-1]):
        await cleared(service)
        await service.consume_batch(*order)
        assert await figures(service) == live
        await cleared(service)
        for payload, number, event_id in firsts.values():
            await service.consume(payload, sequence=number, event_id=event_id)
        await service.consume_batch(*(d for d in order if d not in firsts.values()))
        assert await figures(service) == live
    assert "applying one by one" not in caplog.text  # each batch applied whole
