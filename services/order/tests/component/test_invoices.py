"""Invoices: lines, tax per rate rounded to the currency's minor unit, totals, the
seller from settings, numbers gapless per year even when issued at once; JSON and PDF."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest
from pypdf import PdfReader

from .conftest import line


async def invoice(service, order: str, body: dict[str, Any] | None = None) -> Any:
    return await service.call("POST", f"/orders/{order}/invoices", body if body is not None else {})


def number_in_year(number: str) -> int:
    match = re.fullmatch(r"INV-(\d{4})-(\d{6})", number)
    assert match, number
    return int(match.group(2))


async def test_an_invoice_charges_each_rate_on_its_lines_and_rounds_once_per_rate(
    service,
) -> None:
    order = await service.order(
        None,
        line(1, "10.05", description="Support hours"),
        line(2, "20.10"),
        line(3, "99.99", description="Charger"),
    )
    response = await invoice(
        service,
        order,
        {"tax_rate": "19", "line_tax_rates": [{"line_no": 3, "tax_rate": "7.5"}]},
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    assert [t["rate"] for t in issued["tax_lines"]] == ["7.5", "19"]
    # 99.99 x 7.5% = 7.49925 -> 7.50; (10.05 + 20.10) x 19% = 5.7285 -> 5.73
    assert [(t["base"]["amount"], t["tax"]["amount"]) for t in issued["tax_lines"]] == [
        ("99.99", "7.50"),
        ("30.15", "5.73"),
    ]
    assert (issued["subtotal"]["amount"], issued["tax"]["amount"], issued["total"]["amount"]) == (
        "130.14",
        "13.23",
        "143.37",
    )
    assert [(item["line_no"], item["tax_rate"]) for item in issued["lines"]] == [
        (1, "19"),
        (2, "19"),
        (3, "7.5"),
    ]
    assert issued["seller"] == {
        "name": "Dealflow Test Ltd",
        "address": ["1 Test Street", "Testville"],
        "tax_id": "GB123",
        "email": None,
        "customer_id": None,
    }
    assert issued["buyer"]["name"] == "ACME Corp"
    # What is due is now the invoice's total, tax included.
    fetched = (await service.call("GET", f"/orders/{order}")).json()
    assert (fetched["invoice_id"], fetched["balance"]["amount"]) == (issued["id"], "143.37")
    again = (await service.call("GET", f"/invoices/{issued['id']}")).json()
    assert again == issued
    event = (await service.envelopes_of(fetched["opportunity_id"]))[-1]
    assert (event["type"], event["data"]["number"], event["data"]["total"]["amount"]) == (
        "order.invoiced",
        issued["number"],
        "143.37",
    )


async def test_a_currency_without_minor_units_is_taxed_in_whole_units(service) -> None:
    order = await service.order(None, line(1, "1005", "JPY"), currency="JPY")
    issued = (await invoice(service, order, {"tax_rate": "10"})).json()
    assert issued["tax"] == {"amount": "100", "currency": "JPY"}  # 100.5 -> 100 (half-even)
    assert issued["total"] == {"amount": "1105", "currency": "JPY"}


async def test_the_pdf_holds_the_number_the_seller_and_the_total(service) -> None:
    order = await service.order(None, line(1, "1234.50"))
    issued = (await invoice(service, order, {"tax_rate": "20"})).json()
    response = await service.http.get(
        f"/invoices/{issued['id']}",
        headers=service.headers("alice", ("rep",), ("emea",), {"Accept": "application/pdf"}),
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert f"Invoice {issued['number']}" in text
    assert "Dealflow Test Ltd" in text
    assert "Total: 1,481.40 USD" in text


async def test_an_order_is_invoiced_once(service) -> None:
    order = await service.order()
    first = await invoice(service, order)
    before = await service.written()
    second = await invoice(service, order)
    assert second.status_code == 409, second.text
    assert first.json()["id"] in second.json()["detail"]
    assert await service.written() == before


BAD_INVOICES = [
    ("rate above 100", {"tax_rate": "100.5"}, "tax_rate"),
    ("negative rate", {"tax_rate": "-1"}, "tax_rate"),
    ("float rate", {"tax_rate": 19.5}, "tax_rate"),
    (
        "line the order lacks",
        {"line_tax_rates": [{"line_no": 9, "tax_rate": "5"}]},
        "line_tax_rates[0].line_no",
    ),
    (
        "a line rated twice",
        {"line_tax_rates": [{"line_no": 1, "tax_rate": "5"}, {"line_no": 1, "tax_rate": "7"}]},
        "line_tax_rates",
    ),
    ("an unknown field", {"discount": "5"}, "discount"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in BAD_INVOICES], ids=[c[0] for c in BAD_INVOICES]
)
async def test_a_bad_invoice_request_is_refused_naming_the_field_and_burns_no_number(
    service, body: dict[str, Any], field: str
) -> None:
    order = await service.order()
    before = await service.written()
    response = await invoice(service, order, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    assert await service.written() == before


async def test_invoices_issued_at_once_are_numbered_without_gaps(service) -> None:
    made = [await service.order() for _ in range(8)]
    # Also ask twice for one order: the refused second issue must not burn a number.
    answers = await asyncio.gather(*(invoice(service, o) for o in [*made, made[0]]))
    issued = [a.json() for a in answers if a.status_code == 201]
    assert sorted(a.status_code for a in answers) == [201] * 8 + [409]
    numbers = sorted(number_in_year(i["number"]) for i in issued)
    assert numbers == list(range(numbers[0], numbers[0] + 8)), numbers
    later = await invoice(service, await service.order())
    assert number_in_year(later.json()["number"]) == numbers[-1] + 1
