"""Request field types whose OpenAPI schema says exactly what their validation enforces.

Clients (and schemathesis) read the schema to know what is valid; a field that refuses
what its schema allows misleads them. Two such gaps, closed here once for every service:

- `Text(n)`: a string that is stored stripped, so whitespace alone is refused. Pydantic's
  `strip_whitespace` + `min_length` documents `minLength: 1` and nothing more, so `"  "`
  looked valid. `Text` states it: `not: {pattern: <whitespace only>}`, no NUL, and
  `maxLength` on the string as sent; the whitespace it strips is the pattern's own set,
  so schema and validation agree character by character. (`not` rather than one pattern
  "something besides whitespace": generators such as schemathesis produce strings for
  that pattern several times slower.)
- `WHOLE_NUMBER`: JSON Schema's `integer` is any number with no fractional part, so
  `88.0` is an integer to every client library; a strict pydantic `int` refused it. With
  `WHOLE_NUMBER` before a strict int, `88.0` is read as 88, while `"88"`, `true` and
  `88.5` stay refused, as the schema says.

NUL (`\\u0000`) is refused in every string by `RequestLimits`, and the OpenAPI
document's description says so once for all (`NUL_RULE`): a `pattern` on every string
made schema-driven generators (schemathesis) several times slower for no information.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

# ECMAScript's `\s` (the regex dialect of JSON Schema), spelled out: Python's and Rust's
# `\s` each differ from it (and from each other) on a few control characters.
WHITESPACE = (
    "\t\n\u000b\u000c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_WHITESPACE_CLASS = (
    "\\t\\n\\u000b\\u000c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f"
    "\\u3000\\ufeff"
)
NUL_RULE = (
    "No string anywhere (path, query, JSON body) may contain the NUL character "
    "(`\\u0000`): such a request is answered 422 naming the field."
)
BLANK_PATTERN = f"^[{_WHITESPACE_CLASS}]*$"
"""A JSON Schema pattern: whitespace alone (what `Text` refuses)."""


@dataclass(frozen=True, slots=True)
class Text:
    """`Annotated[str, Text(200)]`: at most 200 characters as sent, not only whitespace,
    no NUL; the value kept is stripped of leading and trailing whitespace."""

    max_length: int

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._clean, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(
            minLength=1, maxLength=self.max_length, **{"not": {"pattern": BLANK_PATTERN}}
        )
        return json_schema

    def _clean(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValueError(f"at most {self.max_length} characters")
        if "\x00" in value:
            raise ValueError("must not contain the NUL character (\\u0000)")
        stripped = value.strip(WHITESPACE)
        if not stripped:
            raise ValueError("must not be empty or only whitespace")
        return stripped


def _whole_number(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_ISO_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _iso_day(value: object) -> object:
    # Lax pydantic reads 0 or "0" as 1970-01-01 (a Unix time); the schema says a date.
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DAY.match(value):
        return value
    raise ValueError("a date as YYYY-MM-DD")


ISO_DATE = BeforeValidator(_iso_day)
"""Put on a `date`: `Annotated[date, ISO_DATE]` accepts `2026-12-31` and nothing else."""

WHOLE_NUMBER = BeforeValidator(_whole_number)
"""With a strict `int`: `Annotated[int, Field(strict=True, ge=...), WHOLE_NUMBER]`. After
the Field: before it, pydantic writes `ge`/`le` into the JSON Schema, not `minimum`."""
