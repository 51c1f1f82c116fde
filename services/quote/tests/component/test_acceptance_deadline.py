"""An acceptance the opportunity never answers: the quote asks again, then stops waiting.

The deadline job (`chase_unanswered_acceptances`) is run by hand here, on the service's
movable clock; the service's settings are the defaults (answer within 120 s, asked
again twice).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    OpportunityAcceptanceRefused,
    OpportunityLost,
    OpportunityWon,
    Stage,
)
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.application.use_cases import chase_unanswered_acceptances
from dealflow_quote.domain.model import AcceptanceDeadline

DEADLINE = AcceptanceDeadline(timedelta(seconds=120), asks_again=2)
OPERATOR = {"user": "olga", "roles": ("operator",), "teams": ()}


@pytest.fixture
async def clock_reset(service: Any) -> AsyncIterator[None]:
    """Each test moves the service's clock; the next one starts from the real time."""
    service.clock.now = datetime.now(UTC)
    yield
    service.clock.now = datetime.now(UTC)


def unit_of_work_of(service: Any) -> Callable[[], QuoteUnitOfWork]:
    platform = service.platform
    return lambda: QuoteUnitOfWork(platform.engine, platform.outbox, platform.clock)


async def chase(service: Any, batch: int = 200) -> int:
    return await chase_unanswered_acceptances(unit_of_work_of(service), DEADLINE, batch)


async def accepted(service: Any, deal: str) -> dict[str, Any]:
    quote = await service.presented(deal)
    response = await service.call("POST", f"/quotes/{quote['id']}/accept")
    assert response.status_code == 202, response.text
    return dict(response.json())


async def types_of(service: Any, deal: str) -> list[str]:
    return [t for t, _ in await service.events_of(deal)]


def won_by(deal: str, quote_id: str, *, repeated: bool = False) -> OpportunityWon:
    return OpportunityWon(
        opportunity_id=uuid.UUID(deal),
        won_quote_id=uuid.UUID(quote_id),
        value=Money.of("1000", "USD"),
        won_by="system:quote-acceptance:alice",
        won_at=datetime.now(UTC),
        version=3,
        repeated=repeated,
    )


def lost_for_budget(deal: str) -> OpportunityLost:
    return OpportunityLost(
        opportunity_id=uuid.UUID(deal),
        reason="budget cut",
        lost_by="alice",
        lost_at=datetime.now(UTC),
        version=4,
    )


# --- the job ------------------------------------------------------------------------


async def test_an_unanswered_acceptance_is_asked_again_then_the_quote_is_presented_again(
    service, clock_reset
) -> None:
    deal = await service.deal()
    quote = await accepted(service, deal)
    path = f"/quotes/{quote['id']}"

    service.clock.advance(seconds=119)
    await chase(service)
    assert await types_of(service, deal) == [
        "quote.created",
        "quote.presented",
        "quote.acceptance_requested",
    ], "not due yet: nothing is asked"

    for attempt in (2, 3):
        service.clock.advance(seconds=120)
        await chase(service)
        asked = (await service.envelopes_of(deal))[-1]
        assert asked["type"] == "quote.acceptance_requested"
        assert asked["data"]["quote_id"] == quote["id"]
        assert asked["data"]["attempt"] == attempt
        assert datetime.fromisoformat(asked["data"]["answer_by"]) == service.clock.now + timedelta(
            seconds=120
        )
        assert (await service.quote(quote["id"]))["status"] == "accept_pending"

    service.clock.advance(seconds=120)
    await chase(service)

    after = await service.quote(quote["id"])
    assert after["status"] == "presented"
    assert after["status_reason"].startswith("no answer from the opportunity service within")
    assert "accept" in (await service.call("GET", path)).json()["allowed_actions"]
    rejected = (await service.envelopes_of(deal))[-1]
    assert rejected["type"] == "quote.acceptance_rejected"
    assert rejected["data"]["reason"] == after["status_reason"]
    service.clock.advance(hours=1)
    await chase(service)  # a later run, or a restart, repeats nothing
    assert (await types_of(service, deal))[2:] == [
        "quote.acceptance_requested",
        "quote.acceptance_requested",
        "quote.acceptance_requested",
        "quote.acceptance_rejected",
    ]


async def test_an_answer_that_arrives_between_two_asks_ends_the_wait(service, clock_reset) -> None:
    deal = await service.deal()
    quote = await accepted(service, deal)
    service.clock.advance(seconds=121)
    await chase(service)  # asked again

    await service.consume(won_by(deal, quote["id"]))
    await service.consume(won_by(deal, quote["id"], repeated=True))  # the answer to the re-ask
    service.clock.advance(hours=1)
    await chase(service)

    assert (await service.quote(quote["id"]))["status"] == "accepted"
    types = await types_of(service, deal)
    assert types.count("quote.accepted") == 1
    assert "quote.acceptance_rejected" not in types, "never both presented again and accepted"


async def test_a_win_on_its_way_when_the_quote_stopped_waiting_still_accepts_it(
    service, clock_reset
) -> None:
    deal = await service.deal()
    quote = await accepted(service, deal)
    for _ in range(3):
        service.clock.advance(seconds=121)
        await chase(service)
    assert (await service.quote(quote["id"]))["status"] == "presented"

    await service.consume(won_by(deal, quote["id"]))  # decided before the last answer_by

    assert (await service.quote(quote["id"]))["status"] == "accepted"
    assert (await types_of(service, deal))[-2:] == ["quote.acceptance_rejected", "quote.accepted"]


async def test_two_replicas_ask_again_about_each_quote_once(service, clock_reset) -> None:
    deal = await service.deal()
    waiting = [await accepted(service, deal) for _ in range(4)]
    service.clock.advance(seconds=121)

    # Two replicas' jobs at once: SKIP LOCKED (PostgreSQL) or the one writer (SQLite)
    # splits the work, and no quote is asked twice.
    counts = await asyncio.gather(chase(service, batch=2), chase(service, batch=2))

    assert sum(counts) == 4
    assert await chase(service) == 0
    envelopes = await service.envelopes_of(deal)
    for quote in waiting:
        attempts = [
            e["data"]["attempt"]
            for e in envelopes
            if e["type"] == "quote.acceptance_requested" and e["data"]["quote_id"] == quote["id"]
        ]
        assert attempts == [1, 2]


async def test_a_quote_that_stops_waiting_on_a_lost_deal_is_abandoned(service, clock_reset) -> None:
    deal = await service.deal()
    quote = await accepted(service, deal)
    await service.consume(lost_for_budget(deal))
    assert (await service.quote(quote["id"]))["status"] == "accept_pending"  # left to its answer

    for _ in range(3):
        service.clock.advance(seconds=121)
        await chase(service)

    after = await service.quote(quote["id"])
    assert after["status"] == "abandoned"
    assert (await types_of(service, deal))[-2:] == [
        "quote.acceptance_rejected",
        "quote.abandoned",
    ]


async def test_a_batch_closes_its_deals_quotes_as_its_events_one_by_one(
    service, clock_reset, caplog
) -> None:
    """A consumer's batch loads and locks the open quotes of the deals it closes in one
    statement, ahead of its handlers: a quote an earlier event of the batch changed must
    be read again by the event that closes its deal."""
    won, lost, refused_then_won = [await service.deal() for _ in range(3)]
    winner, passed_over = await accepted(service, won), await service.presented(won)
    left = await service.presented(lost)
    refused, second = (
        await accepted(service, refused_then_won),
        await accepted(service, refused_then_won),
    )
    batch = [
        won_by(won, winner["id"]),
        lost_for_budget(lost),
        OpportunityAcceptanceRefused(
            opportunity_id=uuid.UUID(refused_then_won),
            quote_id=uuid.UUID(refused["id"]),
            reason="another quote was accepted first",
            stage=Stage.NEGOTIATION,
        ),
        won_by(refused_then_won, second["id"]),
    ]
    await service.consume_together(*batch)

    statuses = {
        q["id"]: (await service.quote(q["id"]))["status"]
        for q in (winner, passed_over, left, refused, second)
    }
    assert statuses == {
        winner["id"]: "accepted",
        passed_over["id"]: "abandoned",
        left["id"]: "abandoned",
        refused["id"]: "abandoned",  # presented again by the refusal, then its deal was won
        second["id"]: "accepted",
    }
    assert "applying one by one" not in caplog.text  # the batch applied whole


# --- GET /sagas/stuck ---------------------------------------------------------------


async def test_operators_list_the_quotes_waiting_longest_with_how_often_they_were_asked(
    service, clock_reset
) -> None:
    deal = await service.deal()
    first = await accepted(service, deal)
    service.clock.advance(seconds=30)
    second = await accepted(service, deal)
    service.clock.advance(seconds=100)  # first: due, asked again; second: not due yet
    await chase(service)
    service.clock.advance(seconds=5)

    response = await service.call(
        "GET", "/sagas/stuck?waiting_longer_than_seconds=60&limit=500", **OPERATOR
    )
    assert response.status_code == 422, "limit is bounded as on the other lists"

    response = await service.call("GET", "/sagas/stuck?waiting_longer_than_seconds=60", **OPERATOR)
    assert response.status_code == 200, response.text
    mine = [i for i in response.json()["items"] if i["opportunity_id"] == deal]
    assert [(i["quote_id"], i["asked_again"]) for i in mine] == [
        (first["id"], 1),
        (second["id"], 0),
    ]
    assert mine[0]["waiting_seconds"] == 135
    assert mine[0]["requested_by"] == "alice"
    assert mine[0]["via"] == "api"

    response = await service.call("GET", "/sagas/stuck?waiting_longer_than_seconds=120", **OPERATOR)
    assert [i["quote_id"] for i in response.json()["items"] if i["opportunity_id"] == deal] == [
        first["id"]
    ]
    response = await service.call("GET", "/sagas/stuck", roles=("admin",), user="root", teams=())
    assert [i["quote_id"] for i in response.json()["items"] if i["opportunity_id"] == deal] == [
        first["id"]
    ], "by default: waiting for longer than the answer deadline"


async def test_the_stuck_list_pages_with_a_cursor(service, clock_reset) -> None:
    deal = await service.deal()
    for _ in range(3):
        await accepted(service, deal)
        service.clock.advance(seconds=1)
    service.clock.advance(hours=2)

    seen: list[str] = []
    cursor = None
    while True:
        query = "/sagas/stuck?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await service.call("GET", query, **OPERATOR)).json()
        assert len(page["items"]) <= 2
        seen += [i["quote_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    waiting = [
        i["quote_id"]
        for i in (await service.call("GET", "/sagas/stuck?limit=200", **OPERATOR)).json()["items"]
    ]
    assert seen == waiting

    bad = await service.call("GET", "/sagas/stuck?cursor=not-a-cursor", **OPERATOR)
    assert bad.status_code == 422


@pytest.mark.parametrize("roles", [("rep",), ("manager",)], ids=str)
async def test_only_operators_and_admins_see_the_stuck_list(service, roles) -> None:
    response = await service.call("GET", "/sagas/stuck", roles=roles)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_stuck_list_needs_a_token(service) -> None:
    response = await service.http.get("/sagas/stuck")
    assert response.status_code == 401
