"""A change starts from copies of the quote and of its deal as this process last wrote or
decided on them (`recent`), and a copy out of date never makes an answer a read would not.

Two replicas of the service share one PostgreSQL schema, as a deployment's do: what one
writes (a quote, or a deal's row from its consumer), the other's copies do not know.
PostgreSQL only: copies serve the one-write mode's unlocked changes, which SQLite does
not have.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from dealflow_common.contracts.opportunity import OpportunityAssigned
from dealflow_common.contracts.topics import QUOTE_EVENTS
from dealflow_common.testing import ComponentDatabases, service_under_test
from dealflow_quote.bootstrap import MIGRATIONS, QuoteSettings, build_app

from .conftest import Quotes

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

STATEMENTS = "dealflow_db_statements_total"
_LINE = {
    "description": "Widget",
    "quantity": "1",
    "unit_price": {"amount": "50.00", "currency": "USD"},
}


@pytest.fixture
async def replicas(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[tuple[Quotes, Quotes]]:
    settings = databases.settings(QuoteSettings, jwt_secret, opportunity_wait_ms=200)
    async with (
        service_under_test(Quotes, settings, build_app, MIGRATIONS, token, [QUOTE_EVENTS]) as a,
        service_under_test(Quotes, settings, build_app, MIGRATIONS, token, [QUOTE_EVENTS]) as b,
    ):
        yield a, b


def copies(service: Quotes, kind: str, outcome: str) -> float:
    value = service.platform.registry.get_sample_value(
        "dealflow_recent_copies_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


def statements(service: Quotes) -> float:
    return service.platform.registry.get_sample_value(STATEMENTS) or 0.0


async def act(service: Quotes, quote: str, action: str, **call: Any) -> Any:
    body = {"reason": "customer chose another"} if action == "abandon" else None
    return await service.call("POST", f"/quotes/{quote}/{action}", body, **call)


async def drafted_on_a_presented_on_b(a: Quotes, b: Quotes) -> str:
    """A quote a keeps a copy of as a draft (version 1), presented since by b (version 2)."""
    deal = await a.deal()
    quote = str((await a.draft(deal))["id"])
    assert (await act(b, quote, "present")).status_code == 200
    return quote


def taken_off(deal: str, owners: list[str], version: int) -> OpportunityAssigned:
    return OpportunityAssigned(
        opportunity_id=uuid.UUID(deal),
        action="unassigned",
        user_id="alice",
        owners=owners,
        team_id=None,
        assigned_by="mia",
        assigned_at=datetime.now(UTC),
        version=version,
    )


async def test_the_deal_path_skips_its_reads_and_answers_as_a_read_would(
    replicas: tuple[Quotes, Quotes],
) -> None:
    a, _ = replicas
    deal = await a.deal()  # a's consumer wrote the deal's row and kept it
    before = statements(a)
    quote = await a.draft(deal)
    assert statements(a) - before == 1  # no read of the deal
    before = statements(a)
    presented = await act(a, quote["id"], "present")
    assert presented.status_code == 200, presented.text
    assert statements(a) - before == 1  # no read of the quote and its deal
    accepted = await act(a, quote["id"], "accept")
    assert accepted.status_code == 202, accepted.text
    assert (copies(a, "deal", "served"), copies(a, "quote", "served")) == (1, 2)
    assert copies(a, "deal", "refused") == copies(a, "quote", "refused") == 0
    # What the copies answered is what a read finds.
    read = await a.call("GET", f"/quotes/{quote['id']}")
    assert read.json() == accepted.json()
    assert read.headers["ETag"] == accepted.headers["ETag"] == '"3"'


async def test_numbers_answered_from_a_copy_are_as_a_read_gives_them(
    replicas: tuple[Quotes, Quotes],
) -> None:
    a, _ = replicas
    deal = await a.deal()
    line = {
        "description": "Widget",
        "quantity": "2.500",
        "unit_price": {"amount": "50", "currency": "USD"},
        "discount_percent": "5.0",
    }
    drafted = await a.draft(deal, line)
    presented = await act(a, drafted["id"], "present")
    assert copies(a, "quote", "served") == 1
    read = (await a.call("GET", f"/quotes/{drafted['id']}")).json()
    assert presented.json() == read
    assert drafted["lines"] == read["lines"]
    assert (read["lines"][0]["quantity"], read["lines"][0]["discount_percent"]) == ("2.5", "5")


async def test_a_replica_without_copies_reads(replicas: tuple[Quotes, Quotes]) -> None:
    a, b = replicas
    deal = await a.deal()
    before = statements(b)
    quote = await b.draft(deal)
    assert statements(b) - before == 2  # the deal, then the quote with its lines and event
    before = statements(b)
    assert (await act(b, quote["id"], "present")).status_code == 200
    assert statements(b) - before == 1  # b drafted it: its copies serve the change
    assert copies(b, "deal", "served") == 0
    assert copies(b, "quote", "served") == 1


async def test_a_quote_another_replica_changed_refuses_the_copy_and_the_change_reads(
    replicas: tuple[Quotes, Quotes],
) -> None:
    a, b = replicas
    quote = await drafted_on_a_presented_on_b(a, b)
    abandoned = await act(a, quote, "abandon")  # allowed from the copy and from the row
    assert abandoned.status_code == 200, abandoned.text
    assert (abandoned.json()["status"], abandoned.headers["ETag"]) == ("abandoned", '"3"')
    assert copies(a, "quote", "refused") == 1
    # The refused copy is forgotten; the change's own result is the next one.
    assert (await act(a, quote, "present")).status_code == 409
    assert copies(a, "quote", "served") == 2


async def test_a_refusal_decided_on_an_old_copy_is_decided_again_on_a_read(
    replicas: tuple[Quotes, Quotes],
) -> None:
    a, b = replicas
    quote = await drafted_on_a_presented_on_b(a, b)
    # A draft cannot be accepted (a's copy); the presented quote (the row) can.
    accepted = await act(a, quote, "accept")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accept_pending"
    assert copies(a, "quote", "refused") == 1


async def test_if_match_is_compared_with_the_row_not_with_an_old_copy(
    replicas: tuple[Quotes, Quotes],
) -> None:
    a, b = replicas
    quote = await drafted_on_a_presented_on_b(a, b)
    old = await act(a, quote, "abandon", headers={"If-Match": '"1"'})
    assert old.status_code == 412, old.text
    current = await act(a, quote, "abandon", headers={"If-Match": '"2"'})
    assert current.status_code == 200, current.text


async def test_someone_taken_off_the_deal_on_another_replica_is_refused(
    replicas: tuple[Quotes, Quotes],
) -> None:
    """The deal's row changed under a's copies (b's consumer applied the event): the
    change's statement sees other applied sequences and refuses them."""
    a, b = replicas
    deal = await a.deal(owners=("bob", "alice"), team_id=None)  # bob made it
    quote = (await a.draft(deal))["id"]
    await b.consume(taken_off(deal, ["bob"], 2), sequence=2)
    refused = await act(a, quote, "present")
    assert refused.status_code == 404, refused.text
    assert copies(a, "quote", "refused") == 1
    # Nor is a new quote drafted on a's copy of the deal.
    drafted = await a.call("POST", "/quotes", {"opportunity_id": deal, "lines": [_LINE]})
    assert drafted.status_code == 422, drafted.text
    assert copies(a, "deal", "refused") == 1
    assert (await b.quote(quote))["status"] == "draft"


async def test_a_deal_purge_marked_without_a_new_sequence_refuses_the_copies(
    replicas: tuple[Quotes, Quotes],
) -> None:
    """The purge marks the deal `purge_pending` with no event's sequence: the stage is
    checked beside the sequences."""
    a, _ = replicas
    deal = await a.deal()
    quote = (await a.draft(deal))["id"]
    assert (await act(a, quote, "present")).status_code == 200
    async with a.engine.begin() as connection:  # as a replica's purge consumer marks it
        await connection.execute(
            text("UPDATE known_opportunities SET stage = 'purge_pending' WHERE id = :id"),
            {"id": uuid.UUID(deal)},
        )
    refused = await act(a, quote, "accept")
    assert refused.status_code == 409, refused.text
    assert copies(a, "quote", "refused") == 1
    drafted = await a.call("POST", "/quotes", {"opportunity_id": deal, "lines": [_LINE]})
    assert drafted.status_code == 409, drafted.text
    assert copies(a, "deal", "refused") == 1
