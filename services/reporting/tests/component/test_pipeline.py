"""GET /pipeline: per open stage, count, value and weighted value in one currency."""

from __future__ import annotations

from datetime import date

from dealflow_common.contracts.opportunity import LeadOrigin, Stage

from .conftest import ADMIN, Reporting


def stage(body: dict, name: str) -> dict:
    (found,) = [s for s in body["stages"] if s["stage"] == name]
    return found


async def test_pipeline_counts_values_and_weights_each_open_stage(service: Reporting) -> None:
    await service.deal("1000.00")
    proposal = await service.deal("2000.00")
    await service.move(proposal, Stage.QUALIFICATION, Stage.PROPOSAL)
    euro = await service.deal("500.00", "EUR")
    await service.move(euro, Stage.QUALIFICATION, Stage.PROPOSAL)
    await service.set_rates(("EUR", "USD", "2026-01-01", "1.20"))

    body = await service.get("/pipeline?as_of=2026-12-01")

    assert body["currency"] == "USD"
    assert stage(body, "lead") == {
        "stage": "lead",
        "deals": 1,
        "value": {"amount": "1000.00", "currency": "USD"},
        "weighted_value": {"amount": "100.00", "currency": "USD"},
    }
    assert stage(body, "proposal")["deals"] == 2
    assert stage(body, "proposal")["value"]["amount"] == "2600.00"  # 2000 + 500 x 1.20
    assert stage(body, "proposal")["weighted_value"]["amount"] == "1300.00"
    assert stage(body, "negotiation")["deals"] == 0
    assert body["total"]["value"]["amount"] == "3600.00"


async def test_closed_deals_leave_the_pipeline(service: Reporting) -> None:
    from dealflow_common.contracts.money import Money

    from .conftest import CREATED_AT

    won = await service.deal("1000.00")
    await service.win(won, CREATED_AT, Money.of("1000.00", "USD"), Stage.LEAD)
    body = await service.get("/pipeline")
    assert body["total"]["deals"] == 0


async def test_filters_narrow_the_pipeline(service: Reporting) -> None:
    await service.deal("100.00", owners=("ann",), team_id="emea", customer="acme")
    await service.deal("200.00", owners=("bob",), team_id="apac", customer="globex")
    await service.deal("400.00", owners=("ann", "bob"), lead_origin=LeadOrigin.WEB)
    await service.deal("800.00", expected_close_date=date(2027, 3, 1))

    async def total(query: str) -> str:
        return str((await service.get(f"/pipeline?{query}"))["total"]["value"]["amount"])

    assert await total("owner=bob") == "600.00"
    assert await total("team=apac") == "200.00"
    assert await total("customer=globex") == "200.00"
    assert await total("lead_origin=web") == "400.00"
    assert await total("expected_close_from=2027-01-01") == "800.00"
    assert await total("expected_close_to=2026-12-31") == "700.00"


async def test_a_report_in_another_currency_converts_at_the_inverse_rate(
    service: Reporting,
) -> None:
    await service.deal("120.00", "USD")
    await service.set_rates(("EUR", "USD", "2026-01-01", "1.20"))
    body = await service.get("/pipeline?currency=EUR&as_of=2026-06-01")
    assert (body["currency"], body["total"]["value"]["amount"]) == ("EUR", "100.00")


async def test_a_missing_rate_is_a_problem_naming_the_currency_and_day(service: Reporting) -> None:
    await service.deal("100.00", "GBP")
    response = await service.call("GET", "/pipeline?as_of=2026-06-01", **ADMIN)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "GBP" in problem["detail"]
    assert "2026-06-01" in problem["detail"]
    assert problem["errors"][0]["field"] == "currency"


async def test_a_rate_effective_later_does_not_convert_an_earlier_day(service: Reporting) -> None:
    await service.deal("100.00", "EUR")
    await service.set_rates(("EUR", "USD", "2026-07-01", "1.10"))
    early = await service.call("GET", "/pipeline?as_of=2026-06-30", **ADMIN)
    assert early.status_code == 422
    late = await service.get("/pipeline?as_of=2026-07-01")
    assert late["total"]["value"]["amount"] == "110.00"


async def test_unknown_currency_and_bad_filters_are_refused_naming_the_field(
    service: Reporting,
) -> None:
    for query, field in [
        ("currency=XYZ", "currency"),
        ("lead_origin=carrier_pigeon", "lead_origin"),
        ("expected_close_from=2026-13-01", "expected_close_from"),
        ("expected_close_from=2026-05-01&expected_close_to=2026-04-01", "expected_close_to"),
    ]:
        response = await service.call("GET", f"/pipeline?{query}", **ADMIN)
        assert response.status_code == 422, query
        assert response.json()["errors"][0]["field"] == field, query


async def test_the_pipeline_needs_a_token(service: Reporting) -> None:
    response = await service.http.get("/pipeline")
    assert response.status_code == 401
