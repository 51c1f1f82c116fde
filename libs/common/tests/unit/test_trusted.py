"""`trusted`: a model built from valid values is the one `model_construct` builds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.trusted import trusted


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str
    price: Money
    tags: list[str] = Field(default_factory=list)


class Aliased(BaseModel):
    name: str = Field(alias="title")


def same(a: BaseModel, b: BaseModel) -> bool:
    return (
        type(a) is type(b)
        and a == b
        and a.model_fields_set == b.model_fields_set
        and a.model_dump_json() == b.model_dump_json()
        and a.__pydantic_extra__ == b.__pydantic_extra__
        and a.__pydantic_private__ == b.__pydantic_private__
    )


def test_every_field_given_builds_what_model_construct_builds() -> None:
    price = Money.of("10.00", "EUR")
    values: dict[str, Any] = {"tags": ["a"], "description": "Seat", "price": price}  # any order

    built = trusted(Line, dict(values))

    assert same(built, Line.model_construct(**values))
    assert built.model_dump_json() == (
        '{"description":"Seat","price":{"amount":"10.00","currency":"EUR"},"tags":["a"]}'
    )


def test_a_field_left_out_gets_its_default_as_model_construct_gives_it() -> None:
    built = trusted(Line, {"description": "Seat", "price": Money.of("1", "USD")})

    assert built.tags == []
    assert built.model_fields_set == {"description", "price"}


def test_a_model_with_aliases_is_left_to_model_construct() -> None:
    assert trusted(Aliased, {"title": "x"}).name == "x"


def test_exact_money_is_the_validated_money_and_refuses_what_validation_refuses() -> None:
    exact = Money.exact(Decimal("1250.50"), "USD")

    assert same(exact, Money(amount=Decimal("1250.50"), currency="USD"))
    with pytest.raises(ValidationError, match="more decimals than USD allows"):
        Money.exact(Decimal("1250.505"), "USD")
