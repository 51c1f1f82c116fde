"""The quote API on PostgreSQL: each endpoint, each refusal, and nothing written by one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dealflow_common.contracts.opportunity import Stage

PROBLEM = "application/problem+json"
ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
USD = {"amount": "50.00", "currency": "USD"}


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


# --- creating quotes ----------------------------------------------------------------


async def test_the_minimum_create_request_makes_a_draft_with_an_exact_total(service) -> None:
    deal = await service.deal()
    response = await service.call(
        "POST",
        "/quotes",
        {
            "opportunity_id": deal,
            "lines": [
                {
                    "description": "Consulting day",
                    "quantity": "3",
                    "unit_price": {"amount": "333.33", "currency": "USD"},
                }
            ],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "draft"
    assert body["total"] == {"amount": "999.99", "currency": "USD"}
    assert response.headers["location"] == f"/quotes/{body['id']}"
    assert datetime.fromisoformat(body["valid_until"]) > datetime.now(UTC) + timedelta(days=29)
    assert await service.events_of(deal) == [("quote.created", 1)]


async def test_drafting_a_quote_writes_once(service) -> None:
    deal = await service.deal()
    statements = "dealflow_db_statements_total"
    before = service.platform.registry.get_sample_value(statements) or 0
    quote = await service.draft(deal)
    sent = (service.platform.registry.get_sample_value(statements) or 0) - before
    if service.engine.dialect.name == "postgresql":
        # The quote, its lines and its event in one statement, which checks that the deal
        # is still open and as its copy says: the consumer that wrote the deal kept it
        # (`recent`; a replica without the copy reads it first, test_recent_copies). The
        # counter sees no BEGIN or COMMIT, so that the work holds no lock is shown in
        # test_concurrency, by a close that does not wait for it.
        assert sent == 1
    else:
        assert sent > 2  # SQLite has no writing CTE
    stored = await service.quote(quote["id"])
    assert (stored["status"], len(stored["lines"])) == ("draft", 1)
    assert await service.events_of(deal) == [("quote.created", 1)]


async def test_lines_round_each_to_the_cent_and_the_total_is_their_sum(service) -> None:
    deal = await service.deal()
    quote = await service.draft(
        deal,
        {
            "description": "A",
            "quantity": "1.5",
            "unit_price": {"amount": "0.99", "currency": "USD"},
        },
        {
            "description": "B",
            "quantity": "3",
            "unit_price": {"amount": "10.00", "currency": "USD"},
            "discount_percent": "12.5",
        },
    )
    assert [line["total"]["amount"] for line in quote["lines"]] == ["1.48", "26.25"]
    assert quote["total"]["amount"] == "27.73"
    assert quote["discount_percent"] == "11.91"  # 3.75 given away of 31.48 list value


async def test_catalog_lines_take_the_list_price_unless_a_special_price_is_given(service) -> None:
    sku = f"VAN-{uuid.uuid4().hex[:6]}"
    product = (
        await service.call(
            "POST",
            "/products",
            {
                "sku": sku,
                "name": "Electric van",
                "list_price": {"amount": "42000", "currency": "USD"},
            },
            **ADMIN,
        )
    ).json()
    deal = await service.deal()
    quote = await service.draft(
        deal,
        {"product_id": product["id"], "quantity": 2},
        {
            "product_id": product["id"],
            "quantity": 1,
            "unit_price": {"amount": "39999.99", "currency": "USD"},
        },
    )
    first, second = quote["lines"]
    assert (first["description"], first["sku"], first["unit_price"]["amount"]) == (
        "Electric van",
        sku,
        "42000.00",
    )
    assert second["unit_price"]["amount"] == "39999.99"
    assert quote["total"]["amount"] == "123999.99"


async def test_a_bundle_line_quotes_its_subscriptions_at_the_bundle_price(service) -> None:
    tag = uuid.uuid4().hex[:6]
    seat = (
        await service.call(
            "POST",
            "/products",
            {
                "sku": f"SEAT-{tag}",
                "name": "Seat",
                "list_price": {"amount": "10", "currency": "USD"},
                "billing": "subscription",
                "billing_period": "month",
            },
            **ADMIN,
        )
    ).json()
    support = (
        await service.call(
            "POST",
            "/products",
            {
                "sku": f"SUP-{tag}",
                "name": "Support",
                "list_price": {"amount": "5", "currency": "USD"},
                "billing": "subscription",
                "billing_period": "month",
            },
            **ADMIN,
        )
    ).json()
    bundle = await service.call(
        "POST",
        "/bundles",
        {
            "sku": f"TEAM-{tag}",
            "name": "Team pack",
            "price": {"amount": "120", "currency": "USD"},
            "billing_period": "month",
            "items": [{"product_id": seat["id"], "quantity": 10}, {"product_id": support["id"]}],
        },
        **ADMIN,
    )
    assert bundle.status_code == 201, bundle.text
    quote = await service.draft(
        await service.deal(), {"bundle_id": bundle.json()["id"], "quantity": 1}
    )
    (line,) = quote["lines"]
    assert (line["billing"], line["billing_period"], line["total"]["amount"]) == (
        "subscription",
        "month",
        "120.00",
    )


async def test_several_alternative_quotes_per_opportunity_are_listed(service) -> None:
    deal = await service.deal()
    made = []
    for _ in range(3):
        service.clock.advance(seconds=1)
        made.append(await service.draft(deal))
    listed = (await service.call("GET", f"/quotes?opportunity_id={deal}")).json()
    assert [q["id"] for q in listed] == [q["id"] for q in made]


# --- refusals at creation ------------------------------------------------------------

FREE = {"description": "Widget", "quantity": "1", "unit_price": USD}
BAD_LINES = [
    ("zero quantity", {**FREE, "quantity": "0"}, "lines[0].quantity"),
    ("negative quantity", {**FREE, "quantity": "-2"}, "lines[0].quantity"),
    ("float quantity", {**FREE, "quantity": 1.5}, "lines[0].quantity"),
    ("discount above 100", {**FREE, "discount_percent": "100.01"}, "lines[0].discount_percent"),
    ("negative discount", {**FREE, "discount_percent": "-1"}, "lines[0].discount_percent"),
    (
        "negative price",
        {**FREE, "unit_price": {"amount": "-1", "currency": "USD"}},
        "lines[0].unit_price.amount",
    ),
    ("free text without price", {"description": "x", "quantity": "1"}, "lines[0]"),
    (
        "product and bundle",
        {"product_id": str(uuid.uuid4()), "bundle_id": str(uuid.uuid4()), "quantity": "1"},
        "lines[0]",
    ),
    ("unknown field", {**FREE, "colour": "red"}, "lines[0].colour"),
]


@pytest.mark.parametrize(("case", "line", "field"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
async def test_bad_lines_are_refused_naming_the_field_and_write_nothing(
    service, case, line, field
) -> None:
    deal = await service.deal()
    before = await service.written()
    response = await service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [line]})
    assert_problem(response, 422, field)
    assert await service.written() == before


async def test_a_price_in_another_currency_than_the_quote_is_refused(service) -> None:
    deal = await service.deal()
    before = await service.written()
    response = await service.call(
        "POST",
        "/quotes",
        {
            "opportunity_id": deal,
            "currency": "USD",
            "lines": [FREE, {**FREE, "unit_price": {"amount": "10", "currency": "EUR"}}],
        },
    )
    body = assert_problem(response, 422, "lines[1].unit_price.currency")
    assert "EUR is not the quote's currency (USD)" in body["detail"]
    assert await service.written() == before


async def test_valid_until_in_the_past_is_refused(service) -> None:
    deal = await service.deal()
    response = await service.call(
        "POST",
        "/quotes",
        {
            "opportunity_id": deal,
            "lines": [FREE],
            "valid_until": "2020-01-01T00:00:00Z",
        },
    )
    assert_problem(response, 422, "valid_until")


async def test_an_unknown_opportunity_is_refused_after_waiting_for_it(service) -> None:
    before = await service.written()
    response = await service.call(
        "POST", "/quotes", {"opportunity_id": str(uuid.uuid4()), "lines": [FREE]}
    )
    assert_problem(response, 422, "opportunity_id")
    assert await service.written() == before


async def test_a_quote_asked_before_its_opportunity_arrived_is_drafted_when_it_does(
    start_service,
) -> None:
    # The wait is far longer than the test allows: the deal's arrival must end it.
    async with start_service(opportunity_wait_ms=60_000) as service:
        opportunity_id = uuid.uuid4()
        asked = asyncio.create_task(
            service.call(
                "POST", "/quotes", {"opportunity_id": str(opportunity_id), "lines": [FREE]}
            )
        )
        await asyncio.sleep(0.1)
        assert not asked.done()
        await service.deal(opportunity_id=opportunity_id)
        response = await asyncio.wait_for(asked, 10)
        assert response.status_code == 201, response.text
        listed = await service.call("GET", f"/quotes?opportunity_id={opportunity_id}")
        assert [q["id"] for q in listed.json()] == [response.json()["id"]]


async def test_a_closed_opportunity_takes_no_quote(service) -> None:
    deal = await service.deal(stage=Stage.CLOSED_LOST)
    response = await service.call("POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]})
    assert_problem(response, 409)


async def test_a_rep_outside_the_deal_sees_neither_it_nor_its_quotes(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea")
    quote = await service.draft(deal)
    outsider = {"user": "zoe", "roles": ("rep",), "teams": ("apac",)}
    assert_problem(await service.call("GET", f"/quotes/{quote['id']}", **outsider), 404)
    assert (await service.call("GET", f"/quotes?opportunity_id={deal}", **outsider)).json() == []
    response = await service.call(
        "POST", "/quotes", {"opportunity_id": deal, "lines": [FREE]}, **outsider
    )
    assert_problem(response, 422, "opportunity_id")


# --- the lifecycle --------------------------------------------------------------------


async def test_a_draft_is_edited_then_presented_and_no_longer_editable(service) -> None:
    deal = await service.deal()
    quote = await service.draft(deal)
    edited = await service.call(
        "PATCH",
        f"/quotes/{quote['id']}",
        {"lines": [{**FREE, "quantity": "4"}]},
        headers={"If-Match": '"1"'},
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["total"]["amount"], edited.json()["version"]) == ("200.00", 2)
    assert (await service.call("POST", f"/quotes/{quote['id']}/present")).status_code == 200
    before = await service.written()
    refused = await service.call("PATCH", f"/quotes/{quote['id']}", {"lines": [FREE]})
    assert assert_problem(refused, 409)["allowed"] == ["accept", "abandon"]
    assert await service.written() == before


async def test_a_stale_version_is_refused(service) -> None:
    quote = await service.draft(await service.deal())
    await service.call("PATCH", f"/quotes/{quote['id']}", {"lines": [FREE]})
    response = await service.call(
        "POST", f"/quotes/{quote['id']}/present", headers={"If-Match": '"1"'}
    )
    assert_problem(response, 412)


async def test_a_big_discount_needs_a_managers_approval_before_it_is_presented(service) -> None:
    deal = await service.deal()
    quote = await service.draft(deal, {**FREE, "discount_percent": "25"})
    assert quote["needs_approval"] is True
    before = await service.written()
    refused = assert_problem(await service.call("POST", f"/quotes/{quote['id']}/present"), 409)
    assert "submit_for_approval" in refused["allowed"]
    assert await service.written() == before

    path = f"/quotes/{quote['id']}"
    assert (await service.call("POST", f"{path}/submit-for-approval")).json()["status"] == (
        "pending_approval"
    )
    assert_problem(await service.call("POST", f"{path}/approve"), 403)  # a rep cannot
    assert (await service.call("POST", f"{path}/approve", **MANAGER)).json()["status"] == (
        "approved"
    )
    presented = (await service.call("POST", f"{path}/present")).json()
    assert (presented["status"], presented["approved_by"]) == ("presented", "mia")


async def test_a_refused_approval_goes_back_to_draft_for_rework(service) -> None:
    quote = await service.draft(await service.deal(), {**FREE, "discount_percent": "40"})
    path = f"/quotes/{quote['id']}"
    await service.call("POST", f"{path}/submit-for-approval")
    rejected = await service.call(
        "POST", f"{path}/reject-approval", {"reason": "too deep"}, **MANAGER
    )
    assert (rejected.json()["status"], rejected.json()["status_reason"]) == (
        "approval_rejected",
        "too deep",
    )
    assert (await service.call("POST", f"{path}/rework")).json()["status"] == "draft"


async def test_accepting_a_presented_quote_answers_202_and_asks_the_opportunity(service) -> None:
    deal = await service.deal()
    quote = await service.presented(deal)
    response = await service.call(
        "POST", f"/quotes/{quote['id']}/accept", headers={"X-Correlation-ID": "flow-42"}
    )
    assert response.status_code == 202
    assert response.json()["status"] == "accept_pending"
    asked = (await service.envelopes_of(deal))[-1]
    assert asked["type"] == "quote.acceptance_requested"
    assert asked["correlationid"] == "flow-42"
    assert asked["data"]["quote_id"] == quote["id"]


@pytest.mark.parametrize("status", ["draft", "abandoned", "expired"])
async def test_only_a_presented_quote_can_be_accepted(service, status) -> None:
    deal = await service.deal()
    quote = await service.draft(
        deal, valid_until=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    path = f"/quotes/{quote['id']}"
    if status == "abandoned":
        await service.call("POST", f"{path}/abandon", {"reason": "customer went quiet"})
    if status == "expired":
        await service.call("POST", f"{path}/present")
        service.clock.advance(hours=2)
    before = await service.written()
    body = assert_problem(await service.call("POST", f"{path}/accept"), 409)
    assert "accept" not in body["allowed"]
    after = await service.quote(quote["id"])
    assert after["status"] == status
    if status != "expired":
        assert await service.written() == before
    service.clock.now = datetime.now(UTC)


async def test_an_overdue_quote_is_expired_when_accepted_before_the_job_reached_it(service) -> None:
    deal = await service.deal()
    quote = await service.presented(
        deal, valid_until=(datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    )
    service.clock.advance(minutes=10)
    assert_problem(await service.call("POST", f"/quotes/{quote['id']}/accept"), 409)
    assert (await service.quote(quote["id"]))["status"] == "expired"
    assert (await service.events_of(deal))[-1][0] == "quote.expired"
    service.clock.now = datetime.now(UTC)


async def test_the_expiry_job_expires_each_due_quote_exactly_once(service) -> None:
    from dealflow_quote.application.use_cases import expire_due_quotes

    deal = await service.deal()
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    due = [await service.presented(deal, valid_until=soon) for _ in range(4)]
    not_due = await service.presented(deal, valid_until=later)
    service.clock.advance(minutes=2)

    def unit_of_work() -> Any:
        from dealflow_quote.application.unit_of_work import QuoteUnitOfWork

        platform = service.platform
        return QuoteUnitOfWork(platform.engine, platform.outbox, platform.clock)

    # Two replicas' jobs at once: SKIP LOCKED splits the work, none is done twice.
    counts = await asyncio.gather(
        expire_due_quotes(unit_of_work, batch=2), expire_due_quotes(unit_of_work, batch=2)
    )
    assert sum(counts) == 4
    assert await expire_due_quotes(unit_of_work) == 0  # a rerun (a restart) repeats nothing
    assert [(await service.quote(q["id"]))["status"] for q in due] == ["expired"] * 4
    assert (await service.quote(not_due["id"]))["status"] == "presented"
    assert [t for t, _ in await service.events_of(deal)].count("quote.expired") == 4
    service.clock.now = datetime.now(UTC)


# --- buy-now links --------------------------------------------------------------------


async def test_a_buy_now_link_lets_the_customer_accept_without_a_user_token(service) -> None:
    deal = await service.deal()
    quote = await service.presented(deal)
    link = await service.call("POST", f"/quotes/{quote['id']}/buy-now-link")
    assert link.status_code == 201, link.text
    path = link.json()["url"].split("://", 1)[1].split("/", 1)[1]
    offer = await service.http.get(f"/{path}")
    assert offer.status_code == 200
    assert offer.json()["total"] == quote["total"]
    accepted = await service.http.post(f"/{path}/accept")
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "accept_pending"
    asked = (await service.envelopes_of(deal))[-1]
    assert (asked["data"]["via"], asked["data"]["requested_by"]) == ("buy_now_link", "customer")
    assert_problem(await service.http.post(f"/{path}/accept"), 409)  # used up


async def test_an_altered_buy_now_link_is_refused(service) -> None:
    quote = await service.presented(await service.deal())
    url = (await service.call("POST", f"/quotes/{quote['id']}/buy-now-link")).json()["url"]
    token = url.rsplit("/", 1)[1]
    header, payload, signature = token.split(".")
    altered = (
        f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    )
    before = await service.written()
    assert_problem(await service.http.post(f"/buy-now/{altered}/accept"), 403)
    assert_problem(await service.http.get(f"/buy-now/{token}x"), 403)
    assert (await service.quote(quote["id"]))["status"] == "presented"
    assert await service.written() == before


async def test_an_expired_buy_now_link_is_refused(service) -> None:
    quote = await service.presented(
        await service.deal(),
        valid_until=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )
    url = (await service.call("POST", f"/quotes/{quote['id']}/buy-now-link")).json()["url"]
    service.clock.advance(hours=2)
    assert_problem(await service.http.post("/" + url.split("/", 3)[3] + "/accept"), 403)
    service.clock.now = datetime.now(UTC)


async def test_no_buy_now_link_for_a_draft(service) -> None:
    quote = await service.draft(await service.deal())
    assert_problem(await service.call("POST", f"/quotes/{quote['id']}/buy-now-link"), 409)


# --- the catalog ----------------------------------------------------------------------


async def test_only_admins_change_the_catalog_and_skus_are_unique(service) -> None:
    body = {
        "sku": f"SKU-{uuid.uuid4().hex[:6]}",
        "name": "Thing",
        "list_price": {"amount": "10", "currency": "USD"},
    }
    assert_problem(await service.call("POST", "/products", body), 403)
    assert (await service.call("POST", "/products", body, **ADMIN)).status_code == 201
    assert_problem(await service.call("POST", "/products", body, **ADMIN), 409)


async def test_a_retired_product_is_kept_on_quotes_but_cannot_be_quoted_again(service) -> None:
    product = (
        await service.call(
            "POST",
            "/products",
            {
                "sku": f"OLD-{uuid.uuid4().hex[:6]}",
                "name": "Old model",
                "list_price": {"amount": "10", "currency": "USD"},
            },
            **ADMIN,
        )
    ).json()
    deal = await service.deal()
    kept = await service.draft(deal, {"product_id": product["id"], "quantity": 1})
    await service.call("POST", f"/products/{product['id']}/retire", **ADMIN)
    response = await service.call(
        "POST",
        "/quotes",
        {
            "opportunity_id": deal,
            "lines": [{"product_id": product["id"], "quantity": 1}],
        },
    )
    assert_problem(response, 422, "lines[0].product_id")
    assert (await service.quote(kept["id"]))["lines"][0]["sku"] == product["sku"]
    listed = (await service.call("GET", "/products")).json()
    assert product["id"] not in [p["id"] for p in listed]


async def test_a_subscription_needs_a_billing_period(service) -> None:
    response = await service.call(
        "POST",
        "/products",
        {
            "sku": f"SUB-{uuid.uuid4().hex[:6]}",
            "name": "Sub",
            "billing": "subscription",
            "list_price": {"amount": "10", "currency": "USD"},
        },
        **ADMIN,
    )
    assert_problem(response, 422, "billing_period")


async def test_the_author_of_a_quote_cannot_approve_its_discount(service) -> None:
    deal = await service.deal(owners=("mia",))
    response = await service.call(
        "POST",
        "/quotes",
        {
            "opportunity_id": deal,
            "lines": [{**FREE, "discount_percent": "30"}],
        },
        **MANAGER,
    )
    quote = response.json()
    await service.call("POST", f"/quotes/{quote['id']}/submit-for-approval", **MANAGER)
    before = await service.written()
    assert_problem(await service.call("POST", f"/quotes/{quote['id']}/approve", **MANAGER), 403)
    assert await service.written() == before
    other_manager = {"user": "max", "roles": ("manager",), "teams": ("emea",)}
    approved = await service.call("POST", f"/quotes/{quote['id']}/approve", **other_manager)
    assert approved.json()["status"] == "approved"


async def test_a_draft_offers_either_presentation_or_approval(service) -> None:
    deal = await service.deal()
    small = await service.draft(deal, {**FREE, "discount_percent": "5"})
    big = await service.draft(deal, {**FREE, "discount_percent": "50"})
    assert "present" in small["allowed_actions"]
    assert "submit_for_approval" not in small["allowed_actions"]
    assert "submit_for_approval" in big["allowed_actions"]
    assert "present" not in big["allowed_actions"]
    refused = assert_problem(await service.call("POST", f"/quotes/{big['id']}/present"), 409)
    assert "present" not in refused["allowed"]


async def test_a_refused_buy_now_link_is_not_echoed_in_the_error(service) -> None:
    body = (await service.http.post("/buy-now/some.secret.token/accept")).json()
    assert "some.secret.token" not in str(body)
    assert body["instance"] == "/buy-now/{token}/accept"


async def test_a_catalog_change_against_an_old_version_is_refused(service) -> None:
    product = (
        await service.call(
            "POST",
            "/products",
            {
                "sku": f"V-{uuid.uuid4().hex[:6]}",
                "name": "Versioned",
                "list_price": {"amount": "10", "currency": "USD"},
            },
            **ADMIN,
        )
    ).json()
    path = f"/products/{product['id']}"
    renamed = await service.call(
        "PATCH", path, {"name": "Renamed"}, headers={"If-Match": '"1"'}, **ADMIN
    )
    assert renamed.json()["version"] == 2
    stale = await service.call(
        "PATCH", path, {"name": "Late"}, headers={"If-Match": '"1"'}, **ADMIN
    )
    assert_problem(stale, 412)


async def test_a_free_text_line_without_its_description_is_named_as_such(service) -> None:
    """Not a bare "required": the schema cannot require a description of every line,
    only of free-text ones, and a client must be told which rule it broke."""
    deal = await service.deal()
    response = await service.call(
        "POST", "/quotes", {"opportunity_id": deal, "lines": [{"quantity": "2"}]}
    )
    assert_problem(response, 422, "lines[0]")
    assert response.json()["errors"][0]["message"] == "a free-text line needs a description"


async def test_a_bundle_item_quantity_may_be_a_whole_float_as_json_schema_allows(service) -> None:
    document = (await service.http.get("/openapi.json")).json()
    quantity = document["components"]["schemas"]["BundleItemBody"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, 10_000)
