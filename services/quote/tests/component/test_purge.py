"""The quote service's part of a purge: archive and delete the deal's quotes, then say so."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.quote import QuotePurgeRequested
from dealflow_quote.adapters.tables import quote_archive

POLICY = PurgePolicySnapshot(version=3, retention_days_won=30, retention_days_lost=30)


def purge_request(opportunity_id: str, run_id: uuid.UUID) -> QuotePurgeRequested:
    return QuotePurgeRequested(
        opportunity_id=uuid.UUID(opportunity_id),
        run_id=run_id,
        policy=POLICY,
        requested_at=datetime.now(UTC),
    )


async def test_every_quote_is_archived_with_its_lines_deleted_and_announced(service) -> None:
    deal = await service.deal()
    other_deal = await service.deal()
    draft = await service.draft(deal)
    presented = await service.presented(deal)
    kept = await service.draft(other_deal)
    run_id = uuid.uuid4()

    await service.consume(purge_request(deal, run_id))

    for quote in (draft, presented):
        assert (await service.call("GET", f"/quotes/{quote['id']}")).status_code == 404
    assert (await service.call("GET", f"/quotes/{kept['id']}")).status_code == 200
    async with service.engine.connect() as connection:
        archived = (
            await connection.execute(
                select(quote_archive).where(quote_archive.c.opportunity_id == uuid.UUID(deal))
            )
        ).all()
    assert {str(a.quote_id) for a in archived} == {draft["id"], presented["id"]}
    assert {a.run_id for a in archived} == {run_id}
    assert archived[0].policy["version"] == 3
    assert archived[0].quote["lines"][0]["description"] == "Widget"
    events = [t for t, _ in await service.events_of(deal)]
    assert events[-3:] == ["quote.purged", "quote.purged", "quote.purge_completed"]
    completed = (await service.envelopes_of(deal))[-1]["data"]
    assert (completed["count"], completed["remaining"]) == (2, 0)


async def test_no_quote_is_created_for_a_deal_being_purged(service) -> None:
    deal = await service.deal()
    await service.consume(purge_request(deal, uuid.uuid4()))
    before = await service.written()
    body = {
        "opportunity_id": deal,
        "lines": [
            {"description": "W", "quantity": "1", "unit_price": {"amount": "1", "currency": "USD"}}
        ],
    }
    response = await service.call("POST", "/quotes", body)
    assert response.status_code == 409, response.text
    assert "purge_pending" in response.json()["detail"]
    assert await service.written() == before


async def test_no_opportunity_event_takes_a_deal_out_of_purge(service) -> None:
    # purge_pending is the quote service's own mark, with no sequence of the opportunity
    # service's: an event newer than every one applied, saying an open stage, must not
    # undo it; nor must the creation of a deal first heard of through its purge.
    deal = await service.deal(stage=Stage.NEGOTIATION)
    await service.consume(purge_request(deal, uuid.uuid4()))
    # The whole deal again (as `opportunity.updated` carries it), numbered past every
    # event applied: an open stage, and bob among the owners.
    await service.deal(
        opportunity_id=uuid.UUID(deal), owners=("alice", "bob"), stage=Stage.PROPOSAL, sequence=50
    )
    unseen = uuid.uuid4()
    await service.consume(purge_request(str(unseen), uuid.uuid4()))
    await service.deal(opportunity_id=unseen, stage=Stage.PROPOSAL, sequence=1)

    line = {"description": "W", "quantity": "1", "unit_price": {"amount": "1", "currency": "USD"}}
    # bob is an owner only by the newer event: its other facts are still taken.
    for purged, user in ((deal, "alice"), (deal, "bob"), (str(unseen), "alice")):
        body = {"opportunity_id": purged, "lines": [line]}
        response = await service.call("POST", "/quotes", body, user=user, teams=())
        assert response.status_code == 409, response.text
        assert "purge_pending" in response.json()["detail"]


async def test_a_purge_asked_again_purges_nothing_twice(service) -> None:
    deal = await service.deal()
    await service.draft(deal)
    await service.consume(purge_request(deal, uuid.uuid4()))
    await service.consume(purge_request(deal, uuid.uuid4()))
    envelopes = await service.envelopes_of(deal)
    assert [e["type"] for e in envelopes][-3:] == [
        "quote.purged",
        "quote.purge_completed",
        "quote.purge_completed",
    ]
    assert envelopes[-1]["data"]["count"] == 0
