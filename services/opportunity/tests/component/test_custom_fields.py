"""Custom fields on PostgreSQL and SQLite: admins define them, deals keep checked values,
lists filter on them, and the deal's events carry them.

Definitions are shared by every deal of the module's database, so each test defines
fields with keys of its own, and a required one is retired before the test ends (or
every later deal would need it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dealflow_opportunity.adapters.tables import custom_field_definitions

from .test_api import assert_problem

ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}


def key(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


async def define(api: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("label", body["key"].replace("_", " "))
    response = await api.call("POST", "/custom-fields", body, **ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def written(api: Any) -> dict[str, int]:
    counts = await api.written()
    counts.update(await api.row_counts(custom_field_definitions))
    return counts


@pytest.fixture
async def required_region(api: Any) -> AsyncIterator[str]:
    region = key("region")
    await define(api, key=region, type="choice", choices=["north", "south"], required=True)
    yield region
    response = await api.call("PATCH", f"/custom-fields/{region}", {"retired": True}, **ADMIN)
    assert response.status_code == 200, response.text


async def test_an_admin_defines_fields_that_everyone_reads_in_order(api) -> None:
    budget, tier = key("budget"), key("tier")
    created = await define(api, key=budget, label="Budget", type="money", tab="Finance")
    await define(api, key=tier, type="choice", choices=["gold", "silver"])
    assert created["required"] is False
    assert created["retired"] is False
    assert created["tab"] == "Finance"

    response = await api.call("GET", "/custom-fields", user="bob", roles=("rep",))
    assert response.status_code == 200
    keys = [f["key"] for f in response.json()]
    assert keys.index(budget) < keys.index(tier)


async def test_a_deal_keeps_its_values_normalised_and_its_events_carry_them(api) -> None:
    budget, seats, signed, tier = key("budget"), key("seats"), key("signed"), key("tier")
    await define(api, key=budget, type="money")
    await define(api, key=seats, type="number")
    await define(api, key=signed, type="date")
    await define(api, key=tier, type="choice", choices=["gold", "silver"])

    deal = await api.open(
        custom_fields={
            budget: {"amount": "1200.50", "currency": "EUR"},
            seats: 40.50,
            signed: "2027-01-31",
            tier: "gold",
        }
    )
    assert deal["custom_fields"] == {
        budget: {"amount": "1200.50", "currency": "EUR"},
        seats: "40.5",
        signed: "2027-01-31",
        tier: "gold",
    }
    read = (await api.call("GET", f"/opportunities/{deal['id']}")).json()
    assert read["custom_fields"] == deal["custom_fields"]
    (created,) = await api.envelopes_of(deal["id"])
    assert created["data"]["opportunity"]["custom_fields"] == deal["custom_fields"]

    response = await api.call(
        "PATCH",
        f"/opportunities/{deal['id']}",
        {"custom_fields": {seats: "41", tier: None}},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["custom_fields"] == {
        budget: {"amount": "1200.50", "currency": "EUR"},
        seats: "41",
        signed: "2027-01-31",
    }
    updated = (await api.envelopes_of(deal["id"]))[-1]
    assert updated["type"] == "opportunity.updated"
    assert updated["data"]["changed_fields"] == ["custom_fields"]
    assert updated["data"]["opportunity"]["custom_fields"][seats] == "41"


async def test_lists_filter_on_a_custom_field_value(api) -> None:
    seats, tier = key("seats"), key("tier")
    await define(api, key=seats, type="number")
    await define(api, key=tier, type="choice", choices=["gold", "silver"])
    gold = await api.open(custom_fields={seats: 10, tier: "gold"})
    silver = await api.open(custom_fields={seats: 10, tier: "silver"})
    await api.open()

    def ids(response: Any) -> list[str]:
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["items"]]

    assert ids(await api.call("GET", f"/opportunities?cf.{tier}=gold")) == [gold["id"]]
    # A number matches however it is spelled.
    both = ids(await api.call("GET", f"/opportunities?cf.{seats}=10.0"))
    assert sorted(both) == sorted([silver["id"], gold["id"]])
    assert ids(await api.call("GET", f"/opportunities?cf.{seats}=10&cf.{tier}=silver")) == [
        silver["id"]
    ]


async def test_a_list_filter_on_an_unknown_field_or_a_bad_value_is_refused(api) -> None:
    seats, budget = key("seats"), key("budget")
    await define(api, key=seats, type="number")
    await define(api, key=budget, type="money")
    assert_problem(
        await api.call("GET", "/opportunities?cf.nothing_here=1"), 422, "cf.nothing_here"
    )
    assert_problem(await api.call("GET", f"/opportunities?cf.{seats}=many"), 422, f"cf.{seats}")
    assert_problem(await api.call("GET", f"/opportunities?cf.{budget}=10"), 422, f"cf.{budget}")


async def test_a_required_field_is_needed_to_open_a_deal(api, required_region) -> None:
    before = await written(api)
    response = await api.opening(title="No region")
    assert_problem(response, 422, f"custom_fields.{required_region}")
    assert await written(api) == before

    deal = await api.open(custom_fields={required_region: "north"})
    assert deal["custom_fields"] == {required_region: "north"}
    before = await written(api)
    response = await api.call(
        "PATCH", f"/opportunities/{deal['id']}", {"custom_fields": {required_region: None}}
    )
    assert_problem(response, 422, f"custom_fields.{required_region}")
    assert await written(api) == before


BAD_VALUES = [
    ("text-not-a-string", "text", {}, 12),
    ("text-empty", "text", {}, "   "),
    ("number-not-a-number", "number", {}, "twelve"),
    ("number-a-boolean", "number", {}, True),
    ("number-infinite", "number", {}, "Infinity"),
    ("money-a-plain-number", "money", {}, "100"),
    ("money-a-bad-currency", "money", {}, {"amount": "1", "currency": "dollars"}),
    ("date-not-a-date", "date", {}, "2027-02-30"),
    ("date-a-number", "date", {}, 20270101),
    ("choice-outside-its-list", "choice", {"choices": ["a", "b"]}, "c"),
    ("choice-not-a-string", "choice", {"choices": ["a", "b"]}, ["a"]),
]


@pytest.mark.parametrize(
    ("case", "type", "extra", "value"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES]
)
async def test_a_bad_value_is_refused_naming_the_field_and_writes_nothing(
    api, case, type, extra, value
) -> None:
    field = key(type)
    await define(api, key=field, type=type, **extra)
    body = {
        "title": "Bad value",
        "customer": {"kind": "organization", "id": "acme", "name": "ACME"},
        "value": {"amount": "1.00", "currency": "USD"},
        "custom_fields": {field: value},
    }
    before = await written(api)
    assert_problem(await api.call("POST", "/opportunities", body), 422, f"custom_fields.{field}")
    assert await written(api) == before

    deal = await api.open()
    before = await written(api)
    response = await api.call(
        "PATCH", f"/opportunities/{deal['id']}", {"custom_fields": {field: value}}
    )
    assert_problem(response, 422, f"custom_fields.{field}")
    assert await written(api) == before


async def test_an_unknown_or_retired_field_takes_no_value(api) -> None:
    old = key("old")
    await define(api, key=old, type="text")
    deal = await api.open(custom_fields={old: "kept"})
    response = await api.call("PATCH", f"/custom-fields/{old}", {"retired": True}, **ADMIN)
    assert response.status_code == 200
    assert response.json()["retired"] is True
    listed = (await api.call("GET", "/custom-fields")).json()
    assert old not in [f["key"] for f in listed]
    with_retired = (await api.call("GET", "/custom-fields?include_retired=true")).json()
    assert old in [f["key"] for f in with_retired]

    # The deal keeps the value it had; nobody sets a new one.
    read = (await api.call("GET", f"/opportunities/{deal['id']}")).json()
    assert read["custom_fields"] == {old: "kept"}
    before = await written(api)
    response = await api.call(
        "PATCH", f"/opportunities/{deal['id']}", {"custom_fields": {old: "new"}}
    )
    assert_problem(response, 422, f"custom_fields.{old}")
    response = await api.call(
        "POST",
        "/opportunities",
        {
            "title": "Unknown field",
            "customer": {"kind": "organization", "id": "acme", "name": "ACME"},
            "value": {"amount": "1.00", "currency": "USD"},
            "custom_fields": {"never_defined": "x"},
        },
    )
    assert_problem(response, 422, "custom_fields.never_defined")
    assert await written(api) == before


async def test_only_admins_define_or_change_fields(api) -> None:
    field = key("owned")
    before = await written(api)
    for roles in (("rep",), ("manager",), ("operator",)):
        response = await api.call(
            "POST", "/custom-fields", {"key": field, "label": "x", "type": "text"}, roles=roles
        )
        assert_problem(response, 403)
    assert await written(api) == before
    await define(api, key=field, type="text")
    response = await api.call(
        "PATCH", f"/custom-fields/{field}", {"label": "y"}, roles=("manager",)
    )
    assert_problem(response, 403)


BAD_DEFINITIONS = [
    ("key-with-capitals", {"key": "Budget", "type": "text"}, "key"),
    ("key-missing", {"type": "text"}, "key"),
    ("unknown-type", {"key": "k_bad_type", "type": "colour"}, "type"),
    ("choice-without-choices", {"key": "k_no_choices", "type": "choice"}, "choices"),
    (
        "choices-twice",
        {"key": "k_twice", "type": "choice", "choices": ["a", "a"]},
        "choices",
    ),
    ("choices-on-text", {"key": "k_text_choices", "type": "text", "choices": ["a"]}, "choices"),
    ("unknown-field", {"key": "k_unknown", "type": "text", "colour": "red"}, "colour"),
]


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_DEFINITIONS, ids=[c[0] for c in BAD_DEFINITIONS]
)
async def test_a_bad_definition_is_refused_and_writes_nothing(api, case, body, field) -> None:
    body.setdefault("label", "A label")
    before = await written(api)
    assert_problem(await api.call("POST", "/custom-fields", body, **ADMIN), 422, field)
    assert await written(api) == before


async def test_a_key_is_defined_once_and_an_unknown_one_cannot_change(api) -> None:
    field = key("once")
    await define(api, key=field, type="text")
    before = await written(api)
    response = await api.call(
        "POST", "/custom-fields", {"key": field, "label": "again", "type": "number"}, **ADMIN
    )
    assert_problem(response, 409)
    response = await api.call("PATCH", "/custom-fields/not_defined", {"label": "x"}, **ADMIN)
    assert_problem(response, 404)
    response = await api.call("PATCH", f"/custom-fields/{field}", {"choices": ["a"]}, **ADMIN)
    assert_problem(response, 422, "choices")
    assert await written(api) == before
