"""A real run: quotes first, then the opportunity; a deal without answer fails and is
finished by the next run. The answers are delivered as the other services would."""

from __future__ import annotations

import uuid

from dealflow_common.contracts.opportunity import OpportunityPurged, Stage
from dealflow_common.contracts.quote import QuotePurgeCompleted, QuotePurged, QuoteStatus

from .conftest import OPERATOR


async def quotes_purged(agent, deal: uuid.UUID, quotes: list[uuid.UUID], run_id: str) -> None:
    now = agent.clock()
    for quote in quotes:
        await agent.consume(
            QuotePurged(
                opportunity_id=deal,
                quote_id=quote,
                run_id=uuid.UUID(run_id),
                previous_status=QuoteStatus.ABANDONED,
                purged_at=now,
            )
        )
    await agent.consume(
        QuotePurgeCompleted(
            opportunity_id=deal,
            run_id=uuid.UUID(run_id),
            count=len(quotes),
            remaining=0,
            completed_at=now,
        )
    )


async def opportunity_purged(agent, deal: uuid.UUID, run_id: str) -> None:
    await agent.consume(
        OpportunityPurged(
            opportunity_id=deal,
            run_id=uuid.UUID(run_id),
            stage=Stage.CLOSED_WON,
            closed_at=None,
            purged_at=agent.clock(),
        )
    )


async def test_quotes_first_then_the_opportunity_and_only_eligible_deals(agent) -> None:
    won, won_quotes = await agent.deal(Stage.CLOSED_WON, 40, quotes=2)
    lost, _ = await agent.deal(Stage.CLOSED_LOST, 35)
    recent, _ = await agent.deal(Stage.CLOSED_WON, 3, quotes=1)
    open_deal, _ = await agent.deal(Stage.NEGOTIATION, None, quotes=1)
    held, _ = await agent.deal(Stage.CLOSED_LOST, 400)
    hold = {"opportunity_id": str(held), "reason": "litigation"}
    assert (await agent.call("POST", "/purge/holds", hold, **OPERATOR)).status_code == 201

    started = await agent.call("POST", "/purge/runs", {"dry_run": False}, **OPERATOR)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    again = await agent.call("POST", "/purge/runs", {"dry_run": True}, **OPERATOR)
    assert (again.status_code, again.json()["id"]) == (200, run_id)
    await agent.run_until(run_id, lambda r: r["examined"] == 3)

    assert sorted(await agent.commands()) == sorted(
        [("quote.purge_requested", str(won)), ("quote.purge_requested", str(lost))]
    )
    # A completion while a quote the agent knows of is still there would fail the deal,
    # so the agent does not ask for the opportunity before every quote is purged.
    await quotes_purged(agent, won, won_quotes, run_id)
    await quotes_purged(agent, lost, [], run_id)
    assert ("opportunity.purge_requested", str(won)) in await agent.commands()
    await opportunity_purged(agent, won, run_id)
    await opportunity_purged(agent, lost, run_id)
    await opportunity_purged(agent, lost, run_id)  # a second answer changes nothing

    run = await agent.run_until(run_id, lambda r: r["finished_at"] is not None)
    assert (run["status"], run["purged"], run["skipped"], run["failed"]) == (
        "succeeded",
        2,
        1,
        0,
    )
    items = await agent.items(run_id)
    assert items[str(won)]["quotes_purged"] == 2
    assert items[str(held)]["reason"] == "on_hold"
    assert str(recent) not in items
    assert str(open_deal) not in items
    metrics = (await agent.http.get("/metrics")).text
    assert "dealflow_purge_opportunities_purged_total 2.0" in metrics
    assert "dealflow_purge_quotes_purged_total 2.0" in metrics


async def test_a_deal_without_answer_fails_and_the_next_run_finishes_it(agent) -> None:
    deal, quotes = await agent.deal(Stage.CLOSED_LOST, 60, quotes=1)
    first = (await agent.call("POST", "/purge/runs", {}, **OPERATOR)).json()["id"]
    await agent.run_until(first, lambda r: r["examined"] >= 1)
    agent.clock.advance(seconds=61)  # the quote service stays silent past the deadline
    run = await agent.run_until(first, lambda r: r["finished_at"] is not None)
    assert (run["status"], run["failed"]) == ("failed", 1)
    assert (await agent.items(first))[str(deal)]["reason"].startswith("no answer")
    status = (await agent.call("GET", "/purge/status", **OPERATOR)).json()
    assert [s["opportunity_id"] for s in status["stuck"]] == [str(deal)]
    failed = [t for t, _ in await agent.events_of(str(deal))]
    assert failed == ["quote.purge_requested", "purge.opportunity_failed"]

    agent.clock.advance(seconds=61)  # past the first backoff
    second = (await agent.call("POST", "/purge/runs", {}, **OPERATOR)).json()["id"]
    await agent.run_until(second, lambda r: r["examined"] >= 1)
    await quotes_purged(agent, deal, quotes, second)
    await opportunity_purged(agent, deal, second)
    run = await agent.run_until(second, lambda r: r["finished_at"] is not None)
    assert (run["status"], run["purged"]) == ("succeeded", 1)
    commands = [t for t, s in await agent.commands() if s == str(deal)]
    assert commands == [
        "quote.purge_requested",
        "quote.purge_requested",
        "opportunity.purge_requested",
    ]
