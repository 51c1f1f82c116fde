"""A create sent again with its Idempotency-Key makes one quote, on each backend.

What it is for: a create that lost its connection while committing answers 500
outcome-unknown; the client sends it again with the same key and gets the quote the
first one made, or the first one's answer never existed and the quote is made now.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dealflow_common.contracts.opportunity import OpportunityLost, Stage
from dealflow_common.idempotency import forget_old_keys
from dealflow_common.testing import writes_held
from dealflow_quote.adapters.tables import request_keys

PROBLEM = "application/problem+json"
LINE = {"description": "Widget", "quantity": "2", "unit_price": {"amount": "50", "currency": "USD"}}


def create(deal: str, *lines: dict[str, Any]) -> dict[str, Any]:
    return {"opportunity_id": deal, "lines": list(lines) or [LINE]}


async def keyed(service: Any, body: dict[str, Any], key: str, **who: Any) -> Any:
    return await service.call("POST", "/quotes", body, headers={"Idempotency-Key": key}, **who)


async def test_the_same_request_sent_again_gets_the_quote_the_first_made(service) -> None:
    deal = await service.deal()
    key = str(uuid.uuid4())
    first = await keyed(service, create(deal), key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = await service.written()

    again = await keyed(service, create(deal), key)

    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert await service.written() == before
    assert await service.events_of(deal) == [("quote.created", 1)]


async def test_the_same_key_with_another_request_is_refused_and_writes_nothing(service) -> None:
    deal = await service.deal()
    key = str(uuid.uuid4())
    assert (await keyed(service, create(deal), key)).status_code == 201
    before = await service.written()

    other = await keyed(service, create(deal, {**LINE, "quantity": "3"}), key)

    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == PROBLEM
    assert [e["field"] for e in other.json()["errors"]] == ["Idempotency-Key"]
    assert await service.written() == before


async def test_a_key_is_its_callers_own(service) -> None:
    deal = await service.deal(owners=("alice", "bob"))
    key = str(uuid.uuid4())
    alices = await keyed(service, create(deal), key)
    bobs = await keyed(service, create(deal), key, user="bob")
    assert (alices.status_code, bobs.status_code) == (201, 201), bobs.text
    assert "idempotent-replayed" not in bobs.headers
    assert alices.json()["id"] != bobs.json()["id"]


async def test_a_refused_create_keeps_no_key(service) -> None:
    """A refusal is not remembered: the key stays free for the request that can succeed
    (here, once the deal it names has become known)."""
    deal = str(uuid.uuid4())
    key = str(uuid.uuid4())
    refused = await keyed(service, create(deal), key)
    assert refused.status_code == 422, refused.text
    assert await stored_keys(service, key) == 0
    await service.deal(opportunity_id=uuid.UUID(deal))

    made = await keyed(service, create(deal), key)

    assert made.status_code == 201, made.text
    assert "idempotent-replayed" not in made.headers


async def test_a_replay_answers_even_when_the_deal_has_closed_since(service) -> None:
    """The retry is answered with what the first request made, not judged again."""
    deal = await service.deal(stage=Stage.NEGOTIATION)
    key = str(uuid.uuid4())
    first = await keyed(service, create(deal), key)
    assert first.status_code == 201, first.text
    await service.consume(
        OpportunityLost(
            opportunity_id=uuid.UUID(deal),
            reason="budget cut",
            lost_by="alice",
            lost_at=datetime.now(UTC),
            version=2,
        ),
        sequence=2,
    )
    again = await keyed(service, create(deal), key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "abandoned"  # the quote as it is now


async def test_a_replay_shows_no_more_than_a_read_would(service) -> None:
    """A manager drafted on a deal of their team; out of the team, their retry is
    answered as a read of that quote would be: 404."""
    deal = await service.deal(owners=("bob",))
    key = str(uuid.uuid4())
    manager = {"user": "mia", "roles": ("manager",)}
    first = await keyed(service, create(deal), key, teams=("emea",), **manager)
    assert first.status_code == 201, first.text
    read = await service.call("GET", f"/quotes/{first.json()['id']}", teams=(), **manager)
    assert read.status_code == 404, read.text

    again = await keyed(service, create(deal), key, teams=(), **manager)

    assert again.status_code == 404, again.text
    assert again.headers["content-type"] == PROBLEM


async def test_two_requests_with_one_key_at_once_make_one_quote(service, backend) -> None:
    """Both read that the key is new, then meet at its insert: the second waits for the
    first's commit, finds the key taken and answers with the first's quote."""
    deal = await service.deal()
    key = str(uuid.uuid4())
    async with writes_held(service, backend, waiting=2, table="request_keys"):
        both = [asyncio.ensure_future(keyed(service, create(deal), key)) for _ in range(2)]
    responses = await asyncio.gather(*both)
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in responses) == ["", "true"]
    assert await service.events_of(deal) == [("quote.created", 1)]


async def test_keys_past_their_retention_are_forgotten(service) -> None:
    deal = await service.deal()
    key = str(uuid.uuid4())
    assert (await keyed(service, create(deal), key)).status_code == 201
    assert await forget_old_keys(service.engine, request_keys, datetime.now(UTC)) >= 1
    assert await stored_keys(service, key) == 0
    again = await keyed(service, create(deal), key)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers  # a new quote: the key was forgotten
    kept = await forget_old_keys(service.engine, request_keys, datetime.now(UTC) - timedelta(1))
    assert kept == 0
    assert await stored_keys(service, key) == 1


async def stored_keys(service: Any, key: str) -> int:
    async with service.engine.connect() as connection:
        return int(
            await connection.scalar(
                select(func.count()).select_from(request_keys).where(request_keys.c.key == key)
            )
            or 0
        )
