"""Opening a deal sent again with its Idempotency-Key opens one deal, on each backend.

What it is for: an opening that lost its connection while committing answers 500
outcome-unknown; the client sends it again with the same key and gets the deal the first
one opened, or, if none was stored, the deal is opened now.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from dealflow_common.testing import writes_held

PROBLEM = "application/problem+json"
BODY = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


async def keyed(api: Any, body: dict[str, Any], key: str, **who: Any) -> Any:
    return await api.call("POST", "/opportunities", body, headers={"Idempotency-Key": key}, **who)


async def test_the_same_opening_sent_again_gets_the_deal_the_first_opened(api) -> None:
    key = str(uuid.uuid4())
    first = await keyed(api, BODY, key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = await api.written()

    again = await keyed(api, BODY, key)

    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert await api.written() == before
    assert await api.events_of(first.json()["id"]) == [("opportunity.created", 1)]


async def test_the_same_key_with_another_opening_is_refused_and_writes_nothing(api) -> None:
    key = str(uuid.uuid4())
    assert (await keyed(api, BODY, key)).status_code == 201
    before = await api.written()

    other = await keyed(api, {**BODY, "title": "Another deal"}, key)

    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == PROBLEM
    assert [e["field"] for e in other.json()["errors"]] == ["Idempotency-Key"]
    assert await api.written() == before


async def test_the_same_amount_written_otherwise_is_the_same_request(api) -> None:
    key = str(uuid.uuid4())
    first = await keyed(api, BODY, key)
    same = await keyed(api, {**BODY, "value": {"amount": "50000", "currency": "USD"}}, key)
    assert same.status_code == 201, same.text
    assert same.json()["id"] == first.json()["id"]


async def test_two_openings_with_one_key_at_once_open_one_deal(api, backend) -> None:
    """Both read that the key is new, then meet at its insert: the second waits for the
    first's commit, finds the key taken and answers with the first's deal."""
    key = str(uuid.uuid4())
    before = await api.written()
    async with writes_held(api, backend, waiting=2, table="request_keys"):
        both = [asyncio.ensure_future(keyed(api, BODY, key)) for _ in range(2)]
    responses = await asyncio.gather(*both)
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in responses) == ["", "true"]
    after = await api.written()
    assert after["opportunities"] == before["opportunities"] + 1
