"""An invoice as the customer reads it: a one-document PDF, drawn with fpdf2.

The PDF's built-in fonts cover Latin-1 only; a character outside it is printed as "?"
rather than refusing the invoice (the JSON form keeps the exact text).
"""

from __future__ import annotations

from decimal import Decimal

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from dealflow_common.contracts.money import Money
from dealflow_order.domain.invoice import Invoice


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _money(money: Money) -> str:
    return f"{money.amount:,f} {money.currency}"


def _number(value: Decimal) -> str:
    return format(value, "f")


def invoice_pdf(invoice: Invoice) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {invoice.number}"))
    pdf.set_author(_latin1(invoice.seller.name))
    pdf.set_creator("Dealflow order service")
    pdf.add_page()
    width = pdf.epw

    def line(text: str, *, size: float = 10, bold: bool = False, align: str = "L") -> None:
        pdf.set_font("Helvetica", "B" if bold else "", size)
        pdf.cell(width, 6, _latin1(text), align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line(invoice.seller.name, size=14, bold=True)
    for address_line in invoice.seller.address:
        line(address_line)
    if invoice.seller.tax_id:
        line(f"Tax id: {invoice.seller.tax_id}")
    if invoice.seller.email:
        line(invoice.seller.email)
    pdf.ln(6)
    line(f"Invoice {invoice.number}", size=16, bold=True)
    line(f"Issued {invoice.issued_at:%Y-%m-%d}")
    line(f"Order {invoice.order_id}")
    pdf.ln(4)
    line("Bill to", bold=True)
    line(invoice.buyer.name)
    if invoice.buyer.customer_id:
        line(f"Customer id: {invoice.buyer.customer_id}")
    pdf.ln(6)

    fixed: list[tuple[str, float]] = [
        ("#", 10),
        ("Description", 70),
        ("Qty", 20),
        ("Unit price", 30),
        ("Tax %", 15),
    ]
    columns = [*fixed, ("Net", width - sum(w for _, w in fixed))]
    pdf.set_font("Helvetica", "B", 9)
    for title, column_width in columns:
        pdf.cell(column_width, 7, title, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", "", 9)
    for item in invoice.lines:
        values = (
            str(item.line_no),
            item.description[:45],
            _number(item.quantity),
            _money(item.unit_price),
            _number(item.tax_rate),
            _money(item.net),
        )
        for (_, column_width), value in zip(columns, values, strict=True):
            pdf.cell(column_width, 6, _latin1(value))
        pdf.ln()
    pdf.ln(4)
    line(f"Subtotal: {_money(invoice.subtotal)}", align="R")
    for tax in invoice.tax_lines:
        line(f"Tax {_number(tax.rate)}% on {_money(tax.base)}: {_money(tax.tax)}", align="R")
    line(f"Total: {_money(invoice.total)}", size=12, bold=True, align="R")
    return bytes(pdf.output())
