"""The deal's shares in the quote service's projection: whom a deal is shared with
sees its quotes; only an `edit` share quotes it; a late share event never brings back
a share revoked since."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from dealflow_common.contracts.opportunity import OpportunityShared, OpportunityUnshared, Share

FREE = {
    "description": "Widget",
    "quantity": "1",
    "unit_price": {"amount": "50.00", "currency": "USD"},
}
READER = {"user": "rita", "roles": ("rep",), "teams": ()}
PARTNER = {"user": "pat", "roles": ("rep",), "teams": ("partners",)}


def shared(deal: str, *held: Share) -> Any:
    return OpportunityShared(
        opportunity_id=uuid.UUID(deal),
        share=held[-1],
        shares=list(held),
        shared_by="alice",
        shared_at=datetime.now(UTC),
        version=2,
    )


def unshared(deal: str, revoked: Share, *left: Share) -> Any:
    return OpportunityUnshared(
        opportunity_id=uuid.UUID(deal),
        share=revoked,
        shares=list(left),
        unshared_by="alice",
        unshared_at=datetime.now(UTC),
        version=3,
    )


async def test_a_read_share_sees_the_quotes_and_an_edit_share_quotes(service) -> None:
    deal = await service.deal(owners=("alice",), team_id=None)
    made = await service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]})
    quote_id = made.json()["id"]
    read = Share(kind="user", id="rita", grant="read")  # type: ignore[arg-type]
    team = Share(kind="team", id="partners", grant="edit")  # type: ignore[arg-type]
    assert (await service.call("GET", f"/quotes/{quote_id}", **READER)).status_code == 404

    await service.consume(shared(deal, read, team), sequence=2)

    assert (await service.call("GET", f"/quotes/{quote_id}", **READER)).status_code == 200
    listed = await service.call("GET", f"/quotes?opportunity_id={deal}", **READER)
    assert [q["id"] for q in listed.json()] == [quote_id]
    quoting = {"opportunity_id": deal, "lines": [FREE]}
    assert (await service.call("POST", "/quotes", quoting, **READER)).status_code == 403
    assert (await service.call("POST", "/quotes", quoting, **PARTNER)).status_code == 201
    assert (await service.call("POST", f"/quotes/{quote_id}/present", **READER)).status_code == 403


async def test_a_late_share_event_does_not_bring_a_revoked_share_back(service) -> None:
    deal = await service.deal(owners=("alice",), team_id=None)
    made = await service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]})
    read = Share(kind="user", id="rita", grant="read")  # type: ignore[arg-type]

    await service.consume(unshared(deal, read), sequence=3)
    await service.consume(shared(deal, read), sequence=2)  # sent again, arriving late

    assert (await service.call("GET", f"/quotes/{made.json()['id']}", **READER)).status_code == 404
