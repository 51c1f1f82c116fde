"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): Dealflow's positive-data check.

Schemathesis's own `positive_data_acceptance` expects every request its generator
considers schema-valid to be accepted. A business API refuses some of them for reasons
no schema can state: a close date in the past for an open deal, a contact for an
individual customer, a move the stage machine forbids (409), a stale version (412).
`schema_valid_data_is_not_refused_for_its_form` keeps what the built-in check is for: a
request the schema allows is never refused for its *form*: its types, lengths,
patterns, required fields, JSON, NUL or whitespace, which is exactly what the OpenAPI
must state (88.0 for an integer, whitespace in a string with minLength 1 were such
refusals). A 422 whose every error is a business rule passes; any form error fails.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

# The messages of refusals for a value's form: pydantic's own (type, length, pattern,
# required, unknown field, JSON) and the platform's (NUL, whitespace, length as sent).
FORM_ERRORS = re.compile(
    r"^(Input should|String should|Value should|List should|Decimal input should|"
    r"Dictionary should|Tuple should|Object has|Field required|required$|unknown field|"
    r"Extra inputs|JSON input should|Invalid JSON|malformed JSON|not a JSON document|"
    r"must not contain the NUL|must not be empty or only whitespace|at most \d+ characters|"
    r"Input is too|URL input)",
)

ACCEPTED = {401, 403, 404, 409, 412, 429}


@schemathesis.check
def schema_valid_data_is_not_refused_for_its_form(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED or status >= 500:
        return None  # 5xx: not_a_server_error's to report
    if status != 422:
        raise AssertionError(f"schema-valid request refused with {status}: {response.text}")
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        raise AssertionError(f"422 without a problem document: {response.text}") from None
    form = [e for e in errors if FORM_ERRORS.match(str(e.get("message", "")))]
    if form or not errors:
        raise AssertionError(
            "schema-valid request refused for its form (the OpenAPI must say so): "
            + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in form or errors)
        )
    return None
