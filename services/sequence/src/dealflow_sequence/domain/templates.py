"""Email templates: rendered with the deal's fields in Jinja2's sandbox, strictly.

A template may name only the deal fields in `DEAL_FIELDS`; naming any other, or
reaching for attributes the sandbox guards (`{{ title.__class__ }}`), is refused when
the sequence is defined, not when the email is due. `StrictUndefined` makes a missing
name an error rather than an empty string, and multiplying or raising to a power is
bounded, so a template cannot build a gigabyte of text.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from dealflow_common.errors import RuleViolated

DEAL_FIELDS: Final = frozenset(
    {
        "title",
        "stage",
        "customer_name",
        "customer_id",
        "owner",
        "owners",
        "team_id",
        "value",
        "value_amount",
        "value_currency",
        "expected_close_date",
        "contact_name",
        "contact_email",
    }
)
"""What a template may name: the deal as the sequence service knows it."""

SAMPLE_DEAL: Final[Mapping[str, Any]] = {
    "title": "Fleet renewal",
    "stage": "proposal",
    "customer_name": "ACME Corp",
    "customer_id": "acme",
    "owner": "alice",
    "owners": "alice",
    "team_id": "team-1",
    "value": "50000.00 USD",
    "value_amount": "50000.00",
    "value_currency": "USD",
    "expected_close_date": "2026-12-31",
    "contact_name": "Jo Buyer",
    "contact_email": "jo@example.com",
}

LONGEST_TEMPLATE = 20_000
LARGEST_PRODUCT = 10_000


class _BoundedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        for side in (left, right):
            if isinstance(side, int | float) and abs(side) > LARGEST_PRODUCT:
                raise SecurityError(f"{operator_name} with an operand above {LARGEST_PRODUCT}")
        result = operator.mul(left, right) if operator_name == "*" else operator.pow(left, right)
        if isinstance(result, str | list) and len(result) > LONGEST_TEMPLATE:
            raise SecurityError("the result is too long")
        return result


_ENVIRONMENT: Final = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


class TemplateRefused(RuleViolated):
    pass


def check_template(source: str, field: str) -> None:
    """Refuse a template that names an unknown field, escapes the sandbox or does not parse."""
    if len(source) > LONGEST_TEMPLATE:
        raise TemplateRefused(field, f"a template may be at most {LONGEST_TEMPLATE} characters")
    try:
        parsed = _ENVIRONMENT.parse(source)
    except TemplateError as error:
        raise TemplateRefused(field, f"the template does not parse: {error}") from None
    unknown = sorted(meta.find_undeclared_variables(parsed) - DEAL_FIELDS)
    if unknown:
        raise TemplateRefused(
            field,
            f"the template names {', '.join(unknown)}, which a deal does not have; "
            f"known fields: {', '.join(sorted(DEAL_FIELDS))}",
        )
    try:
        render_template(source, SAMPLE_DEAL)
    except SecurityError as error:
        raise TemplateRefused(field, f"the template is not allowed: {error}") from None
    except TemplateError as error:
        raise TemplateRefused(field, f"the template cannot be rendered: {error}") from None


def render_template(source: str, deal: Mapping[str, Any]) -> str:
    """The template rendered with `deal`; raises jinja2's `TemplateError` if it cannot be."""
    return _ENVIRONMENT.from_string(source).render(dict(deal))
