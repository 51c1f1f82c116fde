"""A quote's answer is built from the aggregate's values without validating them again
(`trusted`): it must be the answer validation would build, to the byte."""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import BillingPeriod
from dealflow_quote.api.routes import to_response
from dealflow_quote.api.schemas import LineResponse, QuoteResponse
from dealflow_quote.application.use_cases import QuotePolicy
from dealflow_quote.domain.model import AcceptanceDeadline, Quote
from dealflow_quote.domain.pricing import QuoteLine

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def validated(quote: Quote, threshold: Decimal) -> QuoteResponse:
    """The answer as it was built before: every value validated."""
    return QuoteResponse(
        id=quote.id,
        opportunity_id=quote.opportunity_id,
        status=quote.status,
        currency=quote.currency,
        lines=[LineResponse.model_validate(line, from_attributes=True) for line in quote.lines],
        total=quote.total,
        discount_percent=quote.discount_percent,
        needs_approval=quote.needs_approval(threshold),
        valid_until=quote.valid_until,
        status_reason=quote.status_reason,
        approved_by=quote.approved_by,
        accepted_at=quote.accepted_at,
        allowed_actions=quote.allowed_actions(threshold),
        created_by=quote.created_by,
        created_at=quote.created_at,
        updated_at=quote.updated_at,
        version=quote.version,
    )


def test_the_answer_is_the_validated_one_to_the_byte() -> None:
    lines = [
        QuoteLine(1, "Seat", Decimal("2"), Money.of("100.00", "USD"), Decimal("15")),
        QuoteLine(
            2,
            "Support",
            Decimal("1.5"),
            Money.of("9.99", "USD"),
            product_id=uuid.uuid4(),
            sku="S-1",
            billing="subscription",
            billing_period=BillingPeriod.MONTH,
        ),
    ]
    quote = Quote.draft(
        opportunity_id=uuid.uuid4(),
        currency="USD",
        lines=lines,
        valid_until=NOW + timedelta(days=30),
        by="alice",
        now=NOW,
    )
    policy = QuotePolicy(
        approval_threshold_percent=Decimal(10),
        default_validity=timedelta(days=30),
        opportunity_wait=3.0,
        acceptance_deadline=AcceptanceDeadline(timedelta(minutes=2), asks_again=2),
    )

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of the wrong type warns when serialized
        answer = to_response(quote, policy).model_dump_json()

    assert answer == validated(quote, Decimal(10)).model_dump_json()
    assert '"needs_approval":true' in answer
