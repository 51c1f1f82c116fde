"""Full-text search (`GET /opportunities?q=`) on PostgreSQL (tsvector) and SQLite (FTS5):
the same deals are found on both, only the ones the caller may see."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from .test_api import assert_problem


def word() -> str:
    # Letters only: a word both back ends keep whole.
    return "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:10])


async def found(api: Any, query: str, **caller: Any) -> set[str]:
    response = await api.http.get(
        "/opportunities",
        params={"q": query, "limit": 200},
        headers=api.headers(
            caller.get("user", "alice"), caller.get("roles", ("rep",)), caller.get("teams", ())
        ),
    )
    assert response.status_code == 200, response.text
    return {d["id"] for d in response.json()["items"]}


async def test_finds_deals_by_title_description_customer_and_notes(api) -> None:
    in_title, in_description, in_customer, in_note = word(), word(), word(), word()
    by_title = await api.open(title=f"Fleet {in_title.capitalize()} renewal")
    by_description = await api.open(description=f"Replace the {in_description} vans")
    by_customer = await api.open(
        customer={"kind": "organization", "id": "c1", "name": f"{in_customer} Logistics"}
    )
    by_note = await api.open()
    response = await api.call(
        "POST", f"/opportunities/{by_note['id']}/notes", {"text": f"Called about {in_note}."}
    )
    assert response.status_code == 201

    assert await found(api, in_title) == {by_title["id"]}
    assert await found(api, in_description.upper()) == {by_description["id"]}
    assert await found(api, f"{in_customer} logistics") == {by_customer["id"]}
    assert await found(api, in_note) == {by_note["id"]}
    # The last word may be a beginning, as typed; the others are whole words, and
    # every word of the query must be there.
    assert await found(api, in_title[:5]) == {by_title["id"]}
    assert await found(api, f"{in_customer} logi") == {by_customer["id"]}
    assert await found(api, f"{in_customer[:5]} logistics") == set()
    assert await found(api, f"{in_title} {in_note}") == set()


async def test_the_document_follows_the_deal_as_it_changes(api) -> None:
    old, new = word(), word()
    deal = await api.open(title=f"Deal {old}")
    response = await api.call("PATCH", f"/opportunities/{deal['id']}", {"title": f"Deal {new}"})
    assert response.status_code == 200, response.text
    assert await found(api, old) == set()
    assert await found(api, new) == {deal["id"]}
    # A stage move leaves the text as it is, and the deal is still found.
    await api.call("POST", f"/opportunities/{deal['id']}/stage", {"stage": "qualification"})
    assert await found(api, new) == {deal["id"]}


async def test_search_shows_only_the_deals_the_caller_may_see(api) -> None:
    shared_word = word()
    mine = await api.open(title=f"Mine {shared_word}", user="alice", teams=("emea",))
    theirs = await api.open(title=f"Theirs {shared_word}", user="bob", teams=("apac",))

    assert await found(api, shared_word, user="alice", teams=("emea",)) == {mine["id"]}
    assert await found(api, shared_word, user="bob", teams=("apac",)) == {theirs["id"]}
    assert await found(api, shared_word, user="carol", teams=("nowhere",)) == set()
    assert await found(api, shared_word, user="root", roles=("admin",)) == {
        mine["id"],
        theirs["id"],
    }


async def test_search_combines_with_the_other_filters(api) -> None:
    shared_word = word()
    lead = await api.open(title=f"Lead {shared_word}")
    moved = await api.open(title=f"Moved {shared_word}")
    await api.call("POST", f"/opportunities/{moved['id']}/stage", {"stage": "qualification"})
    response = await api.http.get(
        "/opportunities",
        params={"q": shared_word, "stage": "lead"},
        headers=api.headers("alice", ("rep",), ("emea",)),
    )
    assert [d["id"] for d in response.json()["items"]] == [lead["id"]]


@pytest.mark.parametrize(
    ("case", "query"),
    [("empty", ""), ("nul", "fleet\x00"), ("punctuation-only", "!!! ..."), ("too-long", "a" * 201)],
)
async def test_a_query_with_nothing_to_search_is_refused(api, case, query) -> None:
    response = await api.http.get(
        "/opportunities", params={"q": query}, headers=api.headers("alice", ("rep",), ())
    )
    assert_problem(response, 422, "q")
