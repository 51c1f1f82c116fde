"""The opportunity service's part of a purge: only a closed deal with no quote left."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import OpportunityPurgeRequested
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.quote import QuoteCreated, QuotePurged, QuoteStatus
from dealflow_opportunity.adapters.tables import opportunity_archive

POLICY = PurgePolicySnapshot(version=1, retention_days_won=30, retention_days_lost=30)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def purge_request(deal: str, run_id: uuid.UUID) -> OpportunityPurgeRequested:
    return OpportunityPurgeRequested(
        opportunity_id=uuid.UUID(deal),
        run_id=run_id,
        policy=POLICY,
        quotes_purged=1,
        requested_at=NOW,
    )


async def written(api) -> dict[str, int]:
    """Row counts but the inbox: a refused request is still a request applied once."""
    counts = await api.written()
    del counts["inbox"]
    return dict(counts)


async def lost_deal(api) -> str:
    deal = await api.open()
    path = f"/opportunities/{deal['id']}"
    note = {"reason": "call", "text": "Spoke to Carla"}
    assert (await api.call("POST", f"{path}/notes", note)).status_code == 201
    lost = {"stage": "closed_lost", "lost_reason": "no budget"}
    assert (await api.call("POST", f"{path}/stage", lost)).status_code == 200
    return str(deal["id"])


def quote_created(deal: str, quote_id: uuid.UUID) -> QuoteCreated:
    return QuoteCreated(
        opportunity_id=uuid.UUID(deal),
        quote_id=quote_id,
        status=QuoteStatus.DRAFT,
        total=Money.of("10", "USD"),
        valid_until=NOW,
        line_count=1,
        created_by="alice",
        created_at=NOW,
    )


def quote_purged(deal: str, quote_id: uuid.UUID) -> QuotePurged:
    return QuotePurged(
        opportunity_id=uuid.UUID(deal),
        quote_id=quote_id,
        run_id=uuid.uuid4(),
        previous_status=QuoteStatus.ABANDONED,
        purged_at=NOW,
    )


async def test_a_closed_deal_is_purged_only_once_none_of_its_quotes_is_left(api) -> None:
    deal = await lost_deal(api)
    quote_id = uuid.uuid4()
    await api.consume(quote_created(deal, quote_id))
    await api.consume(quote_purged(deal, quote_id))
    run_id = uuid.uuid4()
    await api.consume(purge_request(deal, run_id))
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 404
    async with api.engine.connect() as connection:
        archived = (
            await connection.execute(
                select(opportunity_archive).where(
                    opportunity_archive.c.opportunity_id == uuid.UUID(deal)
                )
            )
        ).one()
    assert (archived.stage, archived.run_id) == ("closed_lost", run_id)
    assert archived.opportunity["notes"][0]["text"] == "Spoke to Carla"
    assert [h["to_stage"] for h in archived.opportunity["sales_history"]][-1] == "closed_lost"
    assert archived.opportunity["owners"][0]["user_id"] == "alice"
    purged = (await api.envelopes_of(deal))[-1]
    assert (purged["type"], purged["data"]["run_id"]) == ("opportunity.purged", str(run_id))

    await api.consume(purge_request(deal, uuid.uuid4()))  # asked again: answered again
    assert [t for t, _ in await api.events_of(deal)][-2:] == [
        "opportunity.purged",
        "opportunity.purged",
    ]


async def test_a_request_ahead_of_the_last_quote_purged_waits_for_it(api) -> None:
    # The command and the quote events travel on different topics: the request may
    # arrive while the quote service's last quote.purged is still on its way.
    deal = await lost_deal(api)
    first, second = uuid.uuid4(), uuid.uuid4()
    await api.consume(quote_created(deal, first), quote_created(deal, second))
    run_id = uuid.uuid4()
    await api.consume(purge_request(deal, run_id))
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 200
    await api.consume(quote_purged(deal, first))
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 200, (
        "never deleted while one of its quotes is left"
    )
    await api.consume(quote_purged(deal, second))
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 404
    purged = (await api.envelopes_of(deal))[-1]
    assert (purged["type"], purged["data"]["run_id"]) == ("opportunity.purged", str(run_id))


async def test_an_open_deal_is_never_purged(api) -> None:
    deal = await api.open()
    before = await written(api)
    await api.consume(purge_request(str(deal["id"]), uuid.uuid4()))
    assert await written(api) == before
    assert (await api.call("GET", f"/opportunities/{deal['id']}")).status_code == 200


async def test_a_quote_created_in_the_batch_that_purges_the_last_other_keeps_the_deal(
    api, caplog
) -> None:
    """A batch's new quotes are written at its end, in one statement: a purge waiting
    for the deal's quotes must count them all the same."""
    deal = await lost_deal(api)
    old, new = uuid.uuid4(), uuid.uuid4()
    await api.consume(quote_created(deal, old))
    await api.consume(purge_request(deal, uuid.uuid4()))  # waits for `old`
    await api.consume_together(quote_created(deal, new), quote_purged(deal, old))

    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 200, (
        "never deleted while one of its quotes is left"
    )
    await api.consume(quote_purged(deal, new))
    assert (await api.call("GET", f"/opportunities/{deal}")).status_code == 404
    assert "applying one by one" not in caplog.text  # the batch applied whole
