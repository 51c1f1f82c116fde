"""The fingerprint that tells a retry from another request under one Idempotency-Key."""

from __future__ import annotations

from pydantic import BaseModel

from dealflow_common.contracts.money import Money
from dealflow_common.idempotency import Idempotency


class Body(BaseModel):
    title: str
    value: Money
    team_id: str | None = None


def test_no_key_no_fingerprint() -> None:
    assert Idempotency.of(None, "deal", Body(title="A", value=Money.of("1", "USD"))) is None


def test_the_same_request_written_otherwise_has_the_same_fingerprint() -> None:
    one = Body.model_validate({"title": "A", "value": {"amount": "100", "currency": "USD"}})
    other = Body.model_validate({"value": {"currency": "USD", "amount": "100.00"}, "title": "A"})
    assert Idempotency.of("k", "deal", one) == Idempotency.of("k", "deal", other)


def test_another_request_or_kind_has_another_fingerprint() -> None:
    body = Body(title="A", value=Money.of("100", "USD"))
    fingerprint = Idempotency.of("k", "deal", body)
    assert fingerprint != Idempotency.of("k", "deal", Body(title="B", value=body.value))
    assert fingerprint != Idempotency.of("k", "quote", body)


def test_sent_only_tells_a_field_left_out_from_its_default_sent() -> None:
    left_out = Body.model_validate({"title": "A", "value": {"amount": "1", "currency": "USD"}})
    sent = Body.model_validate(
        {"title": "A", "value": {"amount": "1", "currency": "USD"}, "team_id": None}
    )
    assert Idempotency.of("k", "deal", left_out) == Idempotency.of("k", "deal", sent)
    assert Idempotency.of("k", "deal", left_out, sent_only=True) != Idempotency.of(
        "k", "deal", sent, sent_only=True
    )
