"""Input the platform refuses for every service, seen through the opportunity API on
both databases: NUL, whitespace-only and overlong strings, bodies that are not UTF-8,
malformed `If-Match`; and what it now accepts because its schema says so (88.0)."""

from __future__ import annotations

from typing import Any

import pytest

from dealflow_common.http.fields import BLANK_PATTERN

DEAL: dict[str, Any] = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}


def fields(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DEAL, "title": "Fleet\u0000renewal"}, "title"),
        ({**DEAL, "customer": {**DEAL["customer"], "name": "\u0000"}}, "customer.name"),
        ({**DEAL, "description": "ok", "external_reference": "x\u0000"}, "external_reference"),
    ],
)
async def test_a_nul_anywhere_in_a_body_is_refused_and_nothing_is_written(
    api: Any, body: dict[str, Any], field: str
) -> None:
    before = await api.written()
    response = await api.call("POST", "/opportunities", body)
    assert response.status_code == 422
    assert fields(response) == [field]
    assert "NUL" in response.json()["detail"]
    assert await api.written() == before


async def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(api: Any) -> None:
    created = await api.open(title="C:\\u0000 folder")
    assert created["title"] == "C:\\u0000 folder"


async def test_a_nul_in_the_query_string_is_refused_not_matched(api: Any) -> None:
    await api.open(title="A deal the NUL search must not list")
    for query in ("q=%00", "q=a%00b", "owner=%00&limit=5"):
        response = await api.http.get(
            f"/opportunities?{query}", headers=api.headers("alice", ("rep",), ("emea",))
        )
        assert response.status_code == 422, query
        assert fields(response) == [query.split("=")[0]]


@pytest.mark.parametrize("blank", ["   ", "\t\n", "\u00a0\u3000"])
async def test_a_whitespace_only_title_is_refused_as_the_schema_says(api: Any, blank: str) -> None:
    before = await api.written()
    response = await api.call("POST", "/opportunities", {**DEAL, "title": blank})
    assert response.status_code == 422
    assert fields(response) == ["title"]
    assert await api.written() == before


async def test_an_overlong_title_is_refused_counting_what_was_sent(api: Any) -> None:
    for title in ("x" * 201, " " * 200 + "x"):
        response = await api.call("POST", "/opportunities", {**DEAL, "title": title})
        assert response.status_code == 422, title[:5]
        assert fields(response) == ["title"]


async def test_a_whole_number_float_is_an_integer_as_json_schema_says(api: Any) -> None:
    created = await api.open(probability=88.0)
    assert created["probability"] == 88
    for wrong in (88.5, "88", True):
        response = await api.call("POST", "/opportunities", {**DEAL, "probability": wrong})
        assert response.status_code == 422, wrong
        assert fields(response) == ["probability"]


async def test_a_body_that_is_not_utf8_is_invalid_input(api: Any) -> None:
    response = await api.http.post(
        "/opportunities",
        content=b'{"title": "\xff\xfe"}',
        headers={
            **api.headers("alice", ("rep",), ("emea",)),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 422
    assert fields(response) == ["body"]


async def test_an_if_match_that_is_no_etag_is_invalid_input(api: Any) -> None:
    deal = await api.open()
    path = f"/opportunities/{deal['id']}/stage"
    for value in ("null", "J", '"1', "W/1"):
        response = await api.call(
            "POST", path, {"stage": "qualification"}, headers={"If-Match": value}
        )
        assert response.status_code == 422, value
        assert fields(response) == ["if-match"]
    stale = await api.call("POST", path, {"stage": "qualification"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412


async def test_an_unsupported_method_names_every_method_of_the_path(api: Any) -> None:
    deal = await api.open()
    for path, methods in (
        (f"/opportunities/{deal['id']}", {"GET", "PATCH"}),
        (f"/opportunities/{deal['id']}/notes", {"GET", "POST"}),
        ("/opportunities", {"GET", "POST"}),
    ):
        response = await api.http.request("OPTIONS", path)
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/problem+json"
        assert set(response.headers["allow"].split(", ")) == methods, path


async def test_page_size_is_capped(api: Any) -> None:
    response = await api.http.get(
        "/opportunities?limit=201", headers=api.headers("alice", ("rep",), ("emea",))
    )
    assert response.status_code == 422
    assert fields(response) == ["limit"]


async def test_a_date_is_only_ever_yyyy_mm_dd(api: Any) -> None:
    headers = api.headers("alice", ("rep",), ("emea",))
    for query in ("expected_close_to=0", "expected_close_from=1700000000"):
        response = await api.http.get(f"/opportunities?{query}", headers=headers)
        assert response.status_code == 422, query
        assert fields(response) == [query.split("=")[0]]
    response = await api.call("POST", "/opportunities", {**DEAL, "expected_close_date": 0})
    assert response.status_code == 422
    assert fields(response) == ["expected_close_date"]


async def test_the_openapi_states_what_the_api_enforces(api: Any) -> None:
    document = (await api.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    opened = schemas["OpenOpportunityRequest"]["properties"]
    assert opened["title"]["not"] == {"pattern": BLANK_PATTERN}
    assert opened["title"]["maxLength"] == 200
    probability = opened["probability"]["anyOf"][0]
    assert (probability["type"], probability["minimum"], probability["maximum"]) == (
        "integer",
        0,
        100,
    )
    assert "NUL" in document["info"]["description"]
    stage = document["paths"]["/opportunities/{opportunity_id}/stage"]["post"]
    if_match = next(p for p in stage["parameters"] if p["name"] == "if-match")
    assert if_match["schema"]["type"] == "string"  # absent or an ETag, never null
    assert "anyOf" not in if_match["schema"]
    assert {"412", "413", "422", "429", "431"} <= set(stage["responses"])
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
