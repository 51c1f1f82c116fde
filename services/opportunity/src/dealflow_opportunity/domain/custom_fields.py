"""Custom fields: the fields an admin defines for deals, and the rule their values obey.

A definition's key and type never change once defined (values already kept would stop
meaning what they meant); its label, tab, choices and whether it is required may. A
field is retired rather than deleted: deals keep the values they have, nobody sets new
ones, and it is no longer required.

Values are normalised when they are accepted, so that the same value is always stored
the same way and a list filter matches it: a number is an exact decimal string
(`"12.5"`, never a float), a date is ISO 8601, money is a `Money`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import CustomFieldValue
from dealflow_common.errors import Conflict, NotFound, RuleViolated

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
MAX_TEXT = 1000
MAX_CHOICES = 100


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    MONEY = "money"
    DATE = "date"
    CHOICE = "choice"


FILTERABLE = frozenset({FieldType.TEXT, FieldType.NUMBER, FieldType.DATE, FieldType.CHOICE})
"""Types a list filters on by equality; money has two parts and is not one of them."""


class InvalidCustomFieldValue(RuleViolated):
    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"custom_fields.{key}", detail)


class CustomFieldNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__("custom field", key)


class CustomFieldExists(Conflict):
    def __init__(self, key: str) -> None:
        super().__init__(f"custom field {key} is already defined; change it with PATCH")


@dataclass(frozen=True, slots=True)
class CustomFieldDefinition:
    key: str
    label: str
    type: FieldType
    required: bool
    choices: tuple[str, ...]
    tab: str | None
    position: int
    retired: bool
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def define(
        cls,
        *,
        key: str,
        label: str,
        type: FieldType,
        required: bool,
        choices: Iterable[str],
        tab: str | None,
        position: int,
        by: str,
        now: datetime,
    ) -> CustomFieldDefinition:
        if not re.match(KEY_PATTERN, key):
            raise RuleViolated("key", "lower-case letters, digits and _, starting with a letter")
        definition = cls(
            key, label, type, required, tuple(choices), tab, position, False, by, now, now
        )
        definition._check_choices()
        return definition

    def changed(self, now: datetime, **changes: Any) -> CustomFieldDefinition:
        """The definition with the given label, tab, choices, required or retired."""
        if "choices" in changes:
            changes["choices"] = tuple(changes["choices"])
        updated = replace(self, updated_at=now, **changes)
        updated._check_choices()
        return updated

    @property
    def is_required(self) -> bool:
        return self.required and not self.retired

    def _check_choices(self) -> None:
        if self.type == FieldType.CHOICE:
            if not self.choices:
                raise RuleViolated("choices", "a choice field needs at least one choice")
            if len(set(self.choices)) != len(self.choices):
                raise RuleViolated("choices", "each choice may appear once")
        elif self.choices:
            raise RuleViolated("choices", f"only a choice field has choices, not a {self.type}")

    def normalise(self, value: object) -> CustomFieldValue:
        """The value as kept, or InvalidCustomFieldValue naming `custom_fields.<key>`."""
        if value is None:
            raise InvalidCustomFieldValue(self.key, "null clears a value only on update")
        match self.type:
            case FieldType.TEXT:
                if not isinstance(value, str) or not value.strip():
                    raise InvalidCustomFieldValue(self.key, "expected non-empty text")
                if len(value) > MAX_TEXT:
                    raise InvalidCustomFieldValue(self.key, f"at most {MAX_TEXT} characters")
                return value.strip()
            case FieldType.NUMBER:
                return _number(self.key, value)
            case FieldType.DATE:
                if not isinstance(value, str):
                    raise InvalidCustomFieldValue(self.key, "expected a date (YYYY-MM-DD)")
                try:
                    return date.fromisoformat(value).isoformat()
                except ValueError:
                    raise InvalidCustomFieldValue(
                        self.key, f"{value!r} is not a date (YYYY-MM-DD)"
                    ) from None
            case FieldType.MONEY:
                if isinstance(value, Money):
                    return value
                try:
                    return Money.model_validate(value)
                except ValidationError:
                    raise InvalidCustomFieldValue(
                        self.key,
                        'expected money: {"amount": "<decimal>", "currency": "<ISO 4217>"}',
                    ) from None
            case FieldType.CHOICE:
                if not isinstance(value, str) or value not in self.choices:
                    raise InvalidCustomFieldValue(
                        self.key, f"{value!r} is not one of {', '.join(self.choices)}"
                    )
                return value
        raise AssertionError(self.type)  # pragma: no cover - the match is total


def _number(key: str, value: object) -> str:
    # A JSON number or a decimal string; booleans are JSON's own type, not numbers.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidCustomFieldValue(key, "expected a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidCustomFieldValue(key, f"{value!r} is not a number") from None
    if not number.is_finite():
        raise InvalidCustomFieldValue(key, "expected a finite number")
    return canonical_number(number)


def canonical_number(number: Decimal) -> str:
    """One spelling per value (`12.50` and `12.5` are one value), for storage and filters."""
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def values_for_new_deal(
    definitions: Mapping[str, CustomFieldDefinition], given: Mapping[str, object]
) -> dict[str, CustomFieldValue]:
    """The values a new deal keeps: each given one valid, every required one given."""
    values = _checked(definitions, given, clearing_allowed=False)
    for definition in definitions.values():
        if definition.is_required and definition.key not in values:
            raise InvalidCustomFieldValue(definition.key, f"{definition.label} is required")
    return values


def values_after_update(
    definitions: Mapping[str, CustomFieldDefinition],
    current: Mapping[str, CustomFieldValue],
    given: Mapping[str, object],
) -> dict[str, CustomFieldValue]:
    """The deal's values after an update that sets the given keys (`None` clears one).

    Only the keys given are checked: a deal opened before a field became required keeps
    working, and must fill the field only when someone tries to clear it.
    """
    values = dict(current)
    for key, value in _checked(definitions, given, clearing_allowed=True).items():
        if value is None:
            if definitions[key].is_required:
                raise InvalidCustomFieldValue(key, f"{definitions[key].label} is required")
            values.pop(key, None)
        else:
            values[key] = value
    return values


def _checked(
    definitions: Mapping[str, CustomFieldDefinition],
    given: Mapping[str, object],
    *,
    clearing_allowed: bool,
) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in given.items():
        definition = definitions.get(key)
        if definition is None:
            raise InvalidCustomFieldValue(key, "no such custom field is defined")
        if value is None and clearing_allowed:
            checked[key] = None
            continue
        if definition.retired:
            raise InvalidCustomFieldValue(key, "this field is retired and takes no new values")
        checked[key] = definition.normalise(value)
    return checked


def filter_value(definition: CustomFieldDefinition, text: str) -> str:
    """A list filter's value, spelled as values are kept (`cf.<key>=...`)."""
    field = f"cf.{definition.key}"
    if definition.type not in FILTERABLE:
        raise RuleViolated(field, f"a {definition.type} field cannot be filtered on")
    try:
        value = definition.normalise(text)
    except InvalidCustomFieldValue as error:
        raise RuleViolated(field, error.detail) from None
    assert isinstance(value, str)
    return value
