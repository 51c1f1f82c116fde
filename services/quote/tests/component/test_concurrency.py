"""Requests that meet in the database, on each backend: a clash between two of them is a
409 or a 412, a database too busy to answer in time a 503; never a 500, a lost update,
or a request left waiting."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text, update

from dealflow_common.contracts.opportunity import OpportunityLost, Stage
from dealflow_common.testing import until_waiting, writes_held
from dealflow_quote.adapters.tables import products, quotes

PROBLEM = "application/problem+json"
ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return dict(response.json())


def product_body(**overrides: Any) -> dict[str, Any]:
    return {
        "sku": f"C-{uuid.uuid4().hex[:8]}",
        "name": "Thing",
        "list_price": {"amount": "10", "currency": "USD"},
        **overrides,
    }


async def new_product(service: Any) -> dict[str, Any]:
    response = await service.call("POST", "/products", product_body(), **ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def renamed(product: dict[str, Any], name: str) -> Any:
    """An uncommitted change of the product's row (it holds the row's lock until it ends)."""
    return update(products).where(products.c.id == uuid.UUID(product["id"])).values(name=name)


async def test_two_catalog_updates_against_the_same_version_apply_once(service, backend) -> None:
    product = await new_product(service)
    path = f"/products/{product['id']}"
    async with writes_held(service, backend, waiting=2, table="products"):
        both = asyncio.gather(
            *(
                service.call("PATCH", path, {"name": name}, headers={"If-Match": '"1"'}, **ADMIN)
                for name in ("First", "Second")
            )
        )
    responses = await both
    assert sorted(r.status_code for r in responses) == [200, 412]
    (applied,) = [r for r in responses if r.status_code == 200]
    (refused,) = [r for r in responses if r.status_code == 412]
    assert assert_problem(refused, 412)["current_version"] == 2
    stored = (await service.call("GET", path)).json()
    assert (stored["name"], stored["version"]) == (applied.json()["name"], 2)


async def test_two_quote_changes_that_name_no_version_both_apply(service, backend) -> None:
    """Both read version 1 and write at once: on PostgreSQL they read without a lock
    (`one_write`), the version refuses the second write, and it runs again, locked,
    on what the first stored. Neither client sees a clash it did not ask about."""
    quote = await service.draft(await service.deal())
    path = f"/quotes/{quote['id']}"
    days = ("2031-01-01T00:00:00Z", "2032-01-01T00:00:00Z")
    async with writes_held(service, backend, waiting=2, table="quotes"):
        both = asyncio.gather(*(service.call("PATCH", path, {"valid_until": day}) for day in days))
    responses = await both
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == [2, 3]
    stored = (await service.call("GET", path)).json()
    last = max(responses, key=lambda r: r.json()["version"]).json()
    assert (stored["version"], stored["valid_until"]) == (3, last["valid_until"])


async def test_two_quote_changes_against_the_same_version_apply_once(service, backend) -> None:
    quote = await service.draft(await service.deal())
    path = f"/quotes/{quote['id']}/present"
    async with writes_held(service, backend, waiting=2, table="quotes"):
        both = asyncio.gather(
            *(service.call("POST", path, headers={"If-Match": '"1"'}) for _ in range(2))
        )
    responses = await both
    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 412)
    assert assert_problem(refused, 412)["current_version"] == 2


async def test_a_sku_taken_by_a_concurrent_request_is_a_conflict_not_an_error(
    service, backend
) -> None:
    body = product_body()
    # Both check the SKU before either has stored it: on PostgreSQL the unique index is
    # what refuses the second (SQLite runs one writer at a time, so its check does).
    async with writes_held(service, backend, waiting=2, table="products"):
        both = asyncio.gather(*(service.call("POST", "/products", body, **ADMIN) for _ in range(2)))
    responses = await both
    assert sorted(r.status_code for r in responses) == [201, 409]
    problem = assert_problem(next(r for r in responses if r.status_code == 409), 409)
    assert problem["type"] == "urn:dealflow:problem:conflict"
    assert "sku" in problem["detail"].lower(), problem
    listed = (await service.call("GET", "/products")).json()
    assert [p["sku"] for p in listed].count(body["sku"]) == 1


async def test_a_read_is_answered_while_another_transaction_writes(service) -> None:
    product = await new_product(service)
    async with service.engine.connect() as writer:
        await writer.begin()  # on SQLite: BEGIN IMMEDIATE, the one write lock
        await writer.execute(renamed(product, "Not yet committed"))
        # Well inside the busy timeout (5 s): a read that waited for the writer fails here.
        read = await asyncio.wait_for(service.call("GET", f"/products/{product['id']}"), timeout=2)
        await writer.rollback()
    assert read.status_code == 200, read.text
    assert read.json()["name"] == product["name"]


async def test_a_change_held_up_by_another_transaction_is_refused_not_left_waiting(
    start_service, backend
) -> None:
    async with start_service(
        database_lock_timeout_ms=300, database_sqlite_busy_timeout_ms=300
    ) as quick:
        product = await new_product(quick)
        async with quick.engine.connect() as holder:
            await holder.begin()
            await holder.execute(renamed(product, "Held"))
            started = time.monotonic()
            response = await quick.call(
                "PATCH",
                f"/products/{product['id']}",
                {"name": "Waiting"},
                headers={"If-Match": '"1"'},
                **ADMIN,
            )
            waited = time.monotonic() - started
            await holder.rollback()
        assert waited < 3
        if backend == "postgresql":
            # The row lock was not granted within lock_timeout: a clash, retry later.
            assert assert_problem(response, 409)["type"] == "urn:dealflow:problem:conflict"
        else:
            # SQLite's one writer kept the file past the busy timeout.
            assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"
        after = (await quick.call("GET", f"/products/{product['id']}")).json()
        assert (after["name"], after["version"]) == (product["name"], 1)


# PostgreSQL only: SQLite's one writer cannot apply the close while the draft waits to
# write, so there the two never interleave.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_quote_asked_while_its_deal_closes_is_refused_not_stored_on_the_closed_deal(
    service,
) -> None:
    """The draft reads the deal open, unlocked (`one_write`), and the deal is lost before
    the quote is written. The quote's insert looks at the deal again and stores nothing;
    the draft runs again, locked, and answers what it would have had the close come
    first. Without that look the quote would stay a draft on a lost deal, which the close
    never saw to abandon."""
    deal = await service.deal(stage=Stage.NEGOTIATION)
    lost = OpportunityLost(
        opportunity_id=uuid.UUID(deal),
        reason="went with a competitor",
        lost_by="alice",
        lost_at=datetime.now(UTC),
        version=2,
    )
    price = {"amount": "5", "currency": "USD"}
    line = {"description": "Widget", "quantity": "1", "unit_price": price}
    async with service.engine.connect() as holder:
        await holder.begin()
        await holder.execute(text("LOCK TABLE quotes IN SHARE MODE"))
        asked = asyncio.ensure_future(
            service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [line]})
        )
        await until_waiting(holder, "quotes", 1)  # it has read the deal, open
        await service.consume(lost, sequence=2)  # the close finds no quote to abandon
        await holder.rollback()
    response = await asked
    assert "is closed_lost" in assert_problem(response, 409)["detail"], response.text
    async with service.engine.connect() as connection:
        stored = await connection.execute(
            select(quotes.c.id).where(quotes.c.opportunity_id == uuid.UUID(deal))
        )
        assert stored.all() == []


# PostgreSQL only: SQLite has no statement timeout (its writers wait on the busy timeout,
# tested just above).
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_statement_past_the_statement_timeout_answers_503(start_service) -> None:
    async with start_service(database_statement_timeout_ms=300, database_lock_timeout_ms=0) as slow:
        product = await new_product(slow)
        async with slow.engine.connect() as holder:
            await holder.begin()
            await holder.execute(text("LOCK TABLE products IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            response = await slow.call("GET", f"/products/{product['id']}")
            waited = time.monotonic() - started
            await holder.rollback()
    assert waited < 3
    problem = assert_problem(response, 503)
    assert problem["type"] == "urn:dealflow:problem:unavailable"
    assert response.headers["retry-after"] == "1"
