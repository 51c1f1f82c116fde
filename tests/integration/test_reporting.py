"""Reporting end to end, on real processes, the real broker and PostgreSQL: deals made
through the opportunity API show in the pipeline, the forecast, the analytics and the
customer's history of the reporting service; `dealflow-reporting rebuild` clears its
read model and replays the topic from offset 0, and the figures are the same.

Each test's deals have a customer of their own, and every report is asked for that
customer, so deals of other tests on the same stack do not change the figures.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from dealflow_reporting.domain.periods import Granularity, Period

pytestmark = pytest.mark.integration

ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 60.0, what: str = "the condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(0.3)


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def open_deal(
    client: httpx.AsyncClient, customer: str, amount: str, currency: str, closes: date
) -> str:
    body = await ok(
        await client.post(
            "/opportunities",
            json={
                "title": f"Deal for {customer}",
                "customer": {"kind": "organization", "id": customer, "name": customer.upper()},
                "value": {"amount": amount, "currency": currency},
                "expected_close_date": closes.isoformat(),
                "team_id": "emea",
            },
        ),
        201,
    )
    return str(body["id"])


async def move(client: httpx.AsyncClient, deal: str, *stages: str, **extra: str) -> None:
    for stage in stages:
        await ok(await client.post(f"/opportunities/{deal}/stage", json={"stage": stage, **extra}))


async def make_deals(as_user: Callable[..., httpx.AsyncClient], customer: str) -> date:
    """Four deals: one in lead, one in proposal (EUR), one won, one lost; the close date."""
    closes = datetime.now(UTC).date() + timedelta(days=45)
    async with as_user("opportunity", "alice", roles=("rep", "manager")) as opportunity:
        await open_deal(opportunity, customer, "1000.00", "USD", closes)
        proposal = await open_deal(opportunity, customer, "2000.00", "EUR", closes)
        await move(opportunity, proposal, "qualification", "proposal")
        won = await open_deal(opportunity, customer, "3000.00", "USD", closes)
        await move(opportunity, won, "qualification", "proposal", "negotiation", "closed_won")
        lost = await open_deal(opportunity, customer, "500.00", "USD", closes)
        await move(opportunity, lost, "qualification")
        await ok(await opportunity.post(f"/opportunities/{lost}/lose", json={"reason": "price"}))
    return closes


async def reports_of(reporting: httpx.AsyncClient, customer: str) -> list[Any]:
    paths = [
        f"/pipeline?customer={customer}",
        f"/forecast?period=quarter&by=owner&customer={customer}",
        f"/forecast?period=month&by=team&customer={customer}",
        f"/analytics?by=owner&period=month&customer={customer}",
        f"/customers/{customer}/deals",
    ]
    return [await ok(await reporting.get(path)) for path in paths]


async def test_deals_made_through_the_api_show_in_every_report(
    stack: Any, as_user: Callable[..., httpx.AsyncClient]
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    async with as_user("reporting", **ADMIN) as reporting:
        today = datetime.now(UTC).date().isoformat()
        await ok(
            await reporting.put(
                "/exchange-rates",
                json={
                    "rates": [
                        {
                            "from_currency": "EUR",
                            "to_currency": "USD",
                            "effective_from": "2020-01-01",
                            "rate": "1.10",
                        }
                    ]
                },
            )
        )
        closes = await make_deals(as_user, customer)

        async def settled() -> Any:
            analytics = await ok(await reporting.get(f"/analytics?customer={customer}"))
            pipeline = await ok(await reporting.get(f"/pipeline?customer={customer}"))
            done = analytics["groups"] and analytics["groups"][0]["closed"] == 2
            return pipeline if done and pipeline["total"]["deals"] == 2 else None

        pipeline = await eventually(settled, what="the reporting figures")
        stages = {s["stage"]: s for s in pipeline["stages"]}
        assert (stages["lead"]["deals"], stages["lead"]["value"]["amount"]) == (1, "1000.00")
        assert stages["proposal"]["value"]["amount"] == "2200.00"  # 2000 EUR x 1.10
        assert stages["proposal"]["weighted_value"]["amount"] == "1100.00"  # at 50 %
        assert pipeline["as_of"] == today

        forecast = await ok(await reporting.get(f"/forecast?period=quarter&customer={customer}"))
        quarter = Period.of(closes, Granularity.QUARTER).label
        (line,) = [x for x in forecast["lines"] if x["period"] == quarter]
        assert (line["deals"], line["unweighted"]["amount"]) == (2, "3200.00")
        this_quarter = Period.of(datetime.now(UTC).date(), Granularity.QUARTER).label
        (actual,) = [x for x in forecast["lines"] if x["period"] == this_quarter and x["won_deals"]]
        assert actual["won"]["amount"] == "3000.00"

        analytics = await ok(await reporting.get(f"/analytics?customer={customer}"))
        (group,) = analytics["groups"]
        assert (group["won"], group["lost"], group["win_rate"]) == (1, 1, 0.5)
        assert group["loss_reasons"] == [{"reason": "price", "deals": 1}]
        assert [s["reached"] for s in group["stages"]] == [2, 2, 1, 1]

        history = await ok(await reporting.get(f"/customers/{customer}/deals"))
        assert sorted(d["value"]["currency"] for d in history) == ["EUR", "USD", "USD", "USD"]

        refused = await reporting.get(f"/pipeline?customer={customer}&currency=GBP")
        assert refused.status_code == 422
        assert "GBP" in refused.json()["detail"]


async def test_a_rebuild_from_offset_zero_gives_the_same_figures(
    stack: Any, as_user: Callable[..., httpx.AsyncClient]
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await make_deals(as_user, customer)
    async with as_user("reporting", **ADMIN) as reporting:
        await ok(
            await reporting.put(
                "/exchange-rates",
                json={
                    "rates": [
                        {
                            "from_currency": "EUR",
                            "to_currency": "USD",
                            "effective_from": "2020-01-01",
                            "rate": "1.10",
                        }
                    ]
                },
            )
        )

        async def settled() -> Any:
            figures = await reports_of(reporting, customer)
            return figures if len(figures[-1]) == 4 and figures[0]["total"]["deals"] == 2 else None

        live = await eventually(settled, what="the live figures")
        # One open deal shared with a user outside the team: his figures are that deal
        # alone, and must come back the same from the replay.
        sharee = f"sharee-{uuid.uuid4().hex[:6]}"
        opened = next(d["id"] for d in live[-1] if d["stage"] == "lead")
        async with as_user("opportunity", "alice", roles=("rep", "manager")) as opportunity:
            await ok(
                await opportunity.post(
                    f"/opportunities/{opened}/shares",
                    json={"kind": "user", "id": sharee, "grant": "read"},
                )
            )
        async with as_user("reporting", sharee, roles=("rep",), teams=()) as as_sharee:

            async def shared() -> Any:
                figures = await reports_of(as_sharee, customer)
                return figures if figures[0]["total"]["deals"] == 1 else None

            await eventually(shared, what="the shared deal in the sharee's figures")
            await asyncio.sleep(1.0)  # any late event of these deals (order, next action)
            live = await reports_of(reporting, customer)
            live_of_sharee = await reports_of(as_sharee, customer)
            assert [d["id"] for d in live_of_sharee[-1]] == [opened]

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dealflow_reporting.cli",
            "rebuild",
            env={**os.environ, **stack.services["reporting"].env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=240)
        assert process.returncode == 0, err.decode()[-3000:]
        assert b"rebuilt the read model from" in out
        replayed = int(out.split(b"from ")[1].split(b" ")[0])
        assert replayed >= 14  # at least this test's own 14 events were read again

    # New connections: the ones kept alive before the rebuild may have been idle past the
    # service's keep-alive timeout, and closed by it just as a request was sent on them.
    async with as_user("reporting", **ADMIN) as reporting:
        assert await reports_of(reporting, customer) == live, err.decode()[-5000:]
        async with as_user("reporting", sharee, roles=("rep",), teams=()) as as_sharee:
            assert await reports_of(as_sharee, customer) == live_of_sharee
