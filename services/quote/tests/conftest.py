"""Builders shared by the quote service's tests (as fixtures: test modules import nothing
from each other under --import-mode=importlib)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteStatus
from dealflow_quote.domain.model import AcceptanceRequest, Quote
from dealflow_quote.domain.pricing import QuoteLine

CREATED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
VALID_UNTIL = CREATED + timedelta(days=60)
"""Far enough ahead of the tests' `now` (late November 2026) to be still valid."""


def build_line(
    amount: str = "100.00",
    *,
    quantity: str = "1",
    discount: str = "0",
    currency: str = "USD",
    line_no: int = 1,
    **extra: Any,
) -> QuoteLine:
    """One quote line: `quantity` x `amount` `currency`, `discount` percent off."""
    return QuoteLine(
        line_no=line_no,
        description=extra.pop("description", f"Widget {line_no}"),
        quantity=Decimal(quantity),
        unit_price=Money.of(amount, currency),
        discount_percent=Decimal(discount),
        **extra,
    )


def build_quote(
    status: QuoteStatus = QuoteStatus.DRAFT,
    *,
    lines: list[QuoteLine] | None = None,
    discount: str = "0",
    valid_until: datetime = VALID_UNTIL,
    currency: str = "USD",
    version: int = 3,
    acceptance: AcceptanceRequest | None = None,
) -> Quote:
    """A quote as loaded from the repository: in `status`, no pending events or bump.

    One awaiting the opportunity's answer was accepted at CREATED, answer due 2 minutes
    later, so past due at the tests' `now` unless `acceptance` says otherwise."""
    if acceptance is None and status == QuoteStatus.ACCEPT_PENDING:
        acceptance = AcceptanceRequest("customer", CREATED, "api", CREATED + timedelta(minutes=2))
    return Quote(
        id=uuid.uuid4(),
        opportunity_id=uuid.uuid4(),
        status=status,
        currency=currency,
        lines=lines
        if lines is not None
        else [build_line("100.00", quantity="2", discount=discount, currency=currency)],
        valid_until=valid_until,
        created_by="alice",
        created_at=CREATED,
        updated_at=CREATED,
        version=version,
        status_reason="earlier reason"
        if status in (QuoteStatus.APPROVAL_REJECTED, QuoteStatus.ABANDONED)
        else None,
        approved_by="mia" if status == QuoteStatus.APPROVED else None,
        accepted_at=CREATED if status == QuoteStatus.ACCEPTED else None,
        acceptance=acceptance,
    )


@pytest.fixture
def line() -> Callable[..., QuoteLine]:
    return build_line


@pytest.fixture
def quote_at() -> Callable[..., Quote]:
    return build_quote
