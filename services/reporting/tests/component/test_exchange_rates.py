"""PUT/GET /exchange-rates: admins maintain rates by effective date; all or nothing."""

from __future__ import annotations

from typing import Any

from .conftest import ADMIN, Reporting


def rates(*entries: tuple[str, str, str, Any]) -> dict[str, Any]:
    return {
        "rates": [
            {"from_currency": f, "to_currency": t, "effective_from": d, "rate": r}
            for f, t, d, r in entries
        ]
    }


async def test_admins_set_rates_by_effective_date_and_a_later_put_replaces_one(
    service: Reporting,
) -> None:
    await service.set_rates(
        ("EUR", "USD", "2026-01-01", "1.10"), ("EUR", "USD", "2026-07-01", "1.2")
    )
    await service.set_rates(("EUR", "USD", "2026-07-01", "1.25"))
    listed = (await service.call("GET", "/exchange-rates", **ADMIN)).json()
    assert [(r["from_currency"], r["effective_from"], r["rate"]) for r in listed] == [
        ("EUR", "2026-01-01", "1.1"),
        ("EUR", "2026-07-01", "1.25"),
    ]


async def test_only_admins_read_or_set_rates(service: Reporting) -> None:
    before = await service.written()
    for roles in (("manager",), ("rep",), ("operator",)):
        put = await service.call(
            "PUT", "/exchange-rates", rates(("EUR", "USD", "2026-01-01", "1.1")), roles=roles
        )
        assert put.status_code == 403, roles
        assert (await service.call("GET", "/exchange-rates", roles=roles)).status_code == 403
    assert await service.written() == before


async def test_bad_rates_are_refused_naming_the_field_and_none_is_written(
    service: Reporting,
) -> None:
    before = await service.written()
    good = ("EUR", "USD", "2026-01-01", "1.1")
    for entry, field in [
        (("XYZ", "USD", "2026-01-01", "1.1"), "rates[1].from_currency"),
        (("EUR", "usd", "2026-01-01", "1.1"), "rates[1].to_currency"),
        (("EUR", "EUR", "2026-01-01", "1.1"), "rates[1].to_currency"),
        (("EUR", "USD", "2026-02-30", "1.1"), "rates[1].effective_from"),
        (("EUR", "USD", "2026-01-01", "0"), "rates[1].rate"),
        (("EUR", "USD", "2026-01-01", "-1"), "rates[1].rate"),
        (("EUR", "USD", "2026-01-01", 1.1), "rates[1].rate"),
    ]:
        response = await service.call("PUT", "/exchange-rates", rates(good, entry), **ADMIN)
        assert response.status_code == 422, entry
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == field, entry
    empty = await service.call("PUT", "/exchange-rates", {"rates": []}, **ADMIN)
    assert empty.status_code == 422
    assert await service.written() == before
