"""GET /forecast, /forecast/snapshots, /analytics and /customers/{customer}/deals."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import Stage

from .conftest import ADMIN, Reporting

JULY = datetime(2026, 7, 20, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 3, tzinfo=UTC)


async def test_forecast_by_quarter_weighted_and_not_against_won_value(service: Reporting) -> None:
    await service.deal("1000.00", expected_close_date=date(2026, 7, 10))
    in_proposal = await service.deal("2000.00", expected_close_date=date(2026, 9, 30))
    await service.move(in_proposal, Stage.QUALIFICATION, Stage.PROPOSAL)
    await service.deal("4000.00", expected_close_date=date(2026, 10, 1))
    won = await service.deal("3000.00", expected_close_date=date(2026, 8, 1))
    await service.win(won, JULY, Money.of("2500.00", "USD"), Stage.LEAD)

    body = await service.get("/forecast?period=quarter")

    assert [(line["period"], line["deals"]) for line in body["lines"]] == [
        ("2026-Q3", 2),
        ("2026-Q4", 1),
    ]
    q3 = body["lines"][0]
    assert q3["unweighted"]["amount"] == "3000.00"
    assert q3["weighted"]["amount"] == "1100.00"  # 1000 x 10 % + 2000 x 50 %
    assert (q3["won_deals"], q3["won"]["amount"]) == (1, "2500.00")


async def test_forecast_by_month_and_by_owner_and_team(service: Reporting) -> None:
    await service.deal(
        "100.00", owners=("ann",), team_id="emea", expected_close_date=date(2026, 7, 1)
    )
    await service.deal(
        "200.00", owners=("bob",), team_id="apac", expected_close_date=date(2026, 8, 1)
    )
    await service.deal(
        "400.00", owners=("ann", "bob"), team_id="emea", expected_close_date=date(2026, 8, 2)
    )

    months = await service.get("/forecast?period=month")
    assert [(line["period"], line["unweighted"]["amount"]) for line in months["lines"]] == [
        ("2026-07", "100.00"),
        ("2026-08", "600.00"),
    ]
    owners = await service.get("/forecast?period=quarter&by=owner")
    assert {(line["owner"], line["unweighted"]["amount"]) for line in owners["lines"]} == {
        ("ann", "500.00"),
        ("bob", "600.00"),
    }
    teams = await service.get("/forecast?period=quarter&by=team")
    assert {(line["team"], line["unweighted"]["amount"]) for line in teams["lines"]} == {
        ("emea", "500.00"),
        ("apac", "200.00"),
    }


async def test_forecast_periods_bound_it_and_bad_ones_are_refused(service: Reporting) -> None:
    await service.deal("100.00", expected_close_date=date(2026, 3, 1))
    await service.deal("200.00", expected_close_date=date(2026, 5, 1))
    body = await service.get("/forecast?period=quarter&from=2026-Q2&to=2026-Q2")
    assert [line["period"] for line in body["lines"]] == ["2026-Q2"]
    for query, field in [
        ("period=week", "period"),
        ("period=quarter&from=2026-Q5", "from"),
        ("period=quarter&to=2026-07", "to"),
        ("period=month&from=2026-07&to=2026-06", "to"),
        ("by=region", "by"),
    ]:
        response = await service.call("GET", f"/forecast?{query}", **ADMIN)
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == field, query


async def test_a_snapshot_keeps_the_forecast_of_its_day_next_to_what_was_won(
    service: Reporting,
) -> None:
    deal = await service.deal("1000.00", expected_close_date=date(2026, 11, 20))
    (job,) = [j for j in service.platform.scheduler.get_jobs() if j.id == "forecast-snapshot"]
    await job.func()
    await job.func()  # the same slot: one snapshot
    await service.win(deal, NOVEMBER, Money.of("900.00", "USD"), Stage.LEAD)

    response = await service.call("GET", "/forecast/snapshots?period=quarter", **ADMIN)
    assert response.status_code == 200, response.text
    (snapshot,) = response.json()
    (line,) = snapshot["lines"]
    assert line["period"] == "2026-Q4"
    assert (line["deals"], line["unweighted"]["amount"]) == (1, "1000.00")
    assert (line["won_deals"], line["won"]["amount"]) == (1, "900.00")
    assert (await service.get("/forecast?period=quarter"))["lines"][0]["deals"] == 0


async def test_analytics_of_closed_deals_per_owner(service: Reporting) -> None:
    won = await service.deal("1000.00", owners=("ann",))
    await service.move(won, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION, days=3.0)
    await service.win(won, JULY, Money.of("1000.00", "USD"), Stage.NEGOTIATION)
    lost = await service.deal("500.00", owners=("ann",))
    await service.move(lost, Stage.QUALIFICATION, days=5.0)
    await service.lose(lost, JULY, "price", Stage.QUALIFICATION)
    other = await service.deal("700.00", owners=("bob",))
    await service.lose(other, NOVEMBER, "timing", Stage.LEAD)
    await service.deal("999.00", owners=("ann",))  # open: not in the analytics

    body = await service.get("/analytics?by=owner")
    ann = next(g for g in body["groups"] if g["owner"] == "ann")
    assert (ann["closed"], ann["won"], ann["lost"], ann["win_rate"]) == (2, 1, 1, 0.5)
    assert ann["average_deal_size"]["amount"] == "1000.00"
    assert ann["sales_cycle_days"] == round(
        (JULY - datetime(2026, 1, 5, 9, tzinfo=UTC)).total_seconds() / 86400, 2
    )
    lead, qualification, _proposal, negotiation = ann["stages"]
    assert (lead["reached"], lead["advanced"], lead["conversion_rate"]) == (2, 2, 1.0)
    assert (qualification["reached"], qualification["advanced"]) == (2, 1)
    assert qualification["conversion_rate"] == 0.5
    assert (negotiation["reached"], negotiation["advanced"]) == (1, 1)
    assert lead["average_days_in_stage"] == 4.0  # 3 and 5 days
    assert ann["loss_reasons"] == [{"reason": "price", "deals": 1}]

    by_period = await service.get("/analytics?period=quarter")
    assert [(g["period"], g["closed"]) for g in by_period["groups"]] == [
        ("2026-Q3", 2),
        ("2026-Q4", 1),
    ]
    q4_only = await service.get("/analytics?period=quarter&from=2026-Q4")
    assert [g["loss_reasons"] for g in q4_only["groups"]] == [[{"reason": "timing", "deals": 1}]]


async def test_a_customers_history_lists_their_deals_in_their_own_currency(
    service: Reporting,
) -> None:
    first = await service.deal("100.00", "EUR", customer="initech", owners=("ann",))
    await service.lose(first, JULY, "price", Stage.LEAD)
    await service.deal("200.00", "USD", customer="initech", owners=("bob",), team_id="apac")
    await service.deal("300.00", customer="other")

    response = await service.call("GET", "/customers/initech/deals", **ADMIN)
    assert response.status_code == 200
    listed = response.json()
    assert {(d["value"]["amount"], d["value"]["currency"], d["outcome"]) for d in listed} == {
        ("100.00", "EUR", "lost"),
        ("200.00", "USD", None),
    }
    mine = await service.call(
        "GET", "/customers/initech/deals", user="ann", roles=("rep",), teams=()
    )
    assert [d["owners"] for d in mine.json()] == [["ann"]]
