"""The opportunity's side of the accept-quote saga, through its real consumer and inbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.order import OrderCreated
from dealflow_common.contracts.quote import QuoteAcceptanceRequested

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def acceptance(
    opportunity_id: str,
    quote_id: uuid.UUID,
    attempt: int = 1,
    answer_by: datetime | None = None,
) -> QuoteAcceptanceRequested:
    return QuoteAcceptanceRequested(
        opportunity_id=uuid.UUID(opportunity_id),
        quote_id=quote_id,
        total=Money.of("100", "USD"),
        requested_by="alice",
        requested_at=NOW,
        via="api",
        attempt=attempt,
        answer_by=answer_by,
    )


async def test_an_accepted_quote_wins_an_open_deal_from_any_stage(api) -> None:
    deal = await api.open()
    quote = uuid.uuid4()
    await api.consume(acceptance(deal["id"], quote))
    won = (await api.call("GET", f"/opportunities/{deal['id']}")).json()
    assert (won["stage"], won["won_quote_id"], won["probability"]) == (
        "closed_won",
        str(quote),
        100,
    )
    assert [t for t, _ in await api.events_of(deal["id"])][-2:] == [
        "opportunity.stage_changed",
        "opportunity.won",
    ]


async def test_a_second_acceptance_is_refused_as_an_event(api) -> None:
    deal = await api.open()
    first, second = uuid.uuid4(), uuid.uuid4()
    await api.consume(acceptance(deal["id"], first), acceptance(deal["id"], second))
    envelopes = await api.envelopes_of(deal["id"])
    refused = envelopes[-1]
    assert refused["type"] == "opportunity.acceptance_refused"
    assert refused["data"]["quote_id"] == str(second)
    assert str(first) in refused["data"]["reason"]
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).json()["won_quote_id"] == str(
        first
    )


async def test_a_lost_deal_refuses_acceptance(api) -> None:
    deal = await api.open()
    await api.call("POST", f"/opportunities/{deal['id']}/lose", {"reason": "no budget"})
    await api.consume(acceptance(deal["id"], uuid.uuid4()))
    last = (await api.envelopes_of(deal["id"]))[-1]
    assert last["type"] == "opportunity.acceptance_refused"
    assert last["data"]["stage"] == "closed_lost"


async def test_the_same_acceptance_delivered_twice_changes_nothing_the_second_time(api) -> None:
    deal = await api.open()
    event_id, quote = uuid.uuid4(), uuid.uuid4()
    await api.consume(acceptance(deal["id"], quote), event_id=event_id)
    before = await api.events_of(deal["id"])
    version = (await api.call("GET", f"/opportunities/{deal['id']}")).json()["version"]
    await api.consume(acceptance(deal["id"], quote), event_id=event_id)
    assert await api.events_of(deal["id"]) == before
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).json()["version"] == version


async def test_the_order_made_from_the_winning_quote_is_recorded(api) -> None:
    deal = await api.open()
    quote, order = uuid.uuid4(), uuid.uuid4()
    await api.consume(acceptance(deal["id"], quote))
    await api.consume(
        OrderCreated(
            opportunity_id=uuid.UUID(deal["id"]),
            order_id=order,
            quote_id=quote,
            total=Money.of("100", "USD"),
            lines=[],
            created_at=NOW,
        )
    )
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).json()["order_id"] == str(order)


async def test_events_caused_by_an_acceptance_carry_its_flow(api) -> None:
    deal = await api.open()
    await api.consume(acceptance(deal["id"], uuid.uuid4()))
    won = (await api.envelopes_of(deal["id"]))[-1]
    assert won["correlationid"] == "test-flow"
    assert won["causationid"] is not None


async def test_the_win_tells_the_accepted_quotes_total(api) -> None:
    deal = await api.open()
    await api.consume(acceptance(deal["id"], uuid.uuid4()))
    won = (await api.envelopes_of(deal["id"]))[-1]
    assert won["data"]["quote_total"] == {"amount": "100.00", "currency": "USD"}
    assert won["data"]["value"] == {"amount": "50000.00", "currency": "USD"}


async def test_the_winning_quote_asking_again_is_answered_won_again(api) -> None:
    deal = await api.open()
    quote = uuid.uuid4()
    await api.consume(acceptance(deal["id"], quote))
    before = (await api.call("GET", f"/opportunities/{deal['id']}")).json()

    # The quote service heard no answer (say, its copy of opportunity.won was lost).
    await api.consume(acceptance(deal["id"], quote, attempt=2))

    after = (await api.call("GET", f"/opportunities/{deal['id']}")).json()
    assert after == before
    first, again = [e for e in await api.envelopes_of(deal["id"]) if e["type"] == "opportunity.won"]
    assert again["data"]["won_quote_id"] == str(quote)
    assert (first["data"]["repeated"], again["data"]["repeated"]) == (False, True)
    assert again["data"]["won_at"] == first["data"]["won_at"]


async def test_a_request_read_after_its_answer_by_is_left_unanswered(api) -> None:
    deal = await api.open()
    before = await api.events_of(deal["id"])
    late = api.clock.now - timedelta(seconds=1)

    await api.consume(acceptance(deal["id"], uuid.uuid4(), answer_by=late))

    assert await api.events_of(deal["id"]) == before
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).json()["stage"] == "lead"
    in_time = api.clock.now + timedelta(minutes=2)
    await api.consume(acceptance(deal["id"], uuid.uuid4(), answer_by=in_time))
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).json()["stage"] == "closed_won"


def order_created(opportunity_id: str, quote_id: uuid.UUID, order_id: uuid.UUID) -> OrderCreated:
    return OrderCreated(
        opportunity_id=uuid.UUID(opportunity_id),
        order_id=order_id,
        quote_id=quote_id,
        total=Money.of("100", "USD"),
        lines=[],
        created_at=NOW,
    )


async def test_a_batch_of_events_changes_the_deals_as_the_same_events_one_by_one(
    api, caplog
) -> None:
    """The consumer loads and locks a batch's deals in one statement, ahead of its
    handlers: a deal's later events in the batch must see what its earlier ones changed."""
    won_before, twice, fresh = [(await api.open())["id"] for _ in range(3)]
    won_quote, first, second, fresh_quote = (uuid.uuid4() for _ in range(4))
    order, fresh_order = uuid.uuid4(), uuid.uuid4()
    await api.consume(acceptance(won_before, won_quote))
    batch = [
        order_created(won_before, won_quote, order),
        acceptance(twice, first),
        acceptance(fresh, fresh_quote),
        acceptance(twice, second),
        order_created(fresh, fresh_quote, fresh_order),
    ]
    await api.consume_together(*batch)

    deals = {
        d: (await api.call("GET", f"/opportunities/{d}")).json() for d in (won_before, twice, fresh)
    }
    assert {
        d: (deal["stage"], deal["won_quote_id"], deal["order_id"]) for d, deal in deals.items()
    } == {
        won_before: ("closed_won", str(won_quote), str(order)),
        twice: ("closed_won", str(first), None),
        fresh: ("closed_won", str(fresh_quote), str(fresh_order)),
    }
    refused = (await api.envelopes_of(twice))[-1]
    assert (refused["type"], refused["data"]["quote_id"]) == (
        "opportunity.acceptance_refused",
        str(second),
    )
    assert "applying one by one" not in caplog.text  # the batch applied whole
