"""Request field types whose OpenAPI schema says exactly what their validation enforces.

Clients (and schemathesis) read the schema to know what is valid; a field that refuses
what its schema allows misleads them. Two such gaps, closed here once for every service:

- `Text(n)`: a string that is stored stripped, so whitespace alone is refused. Pydantic's
  `strip_whitespace` + `min_length` documents `minLength: 1` and nothing more, so `"  "`
  looked valid. `Text` states `pattern` (at least one character that is not whitespace,
  and no NUL) and `maxLength` on the string as sent; the whitespace it strips is the
  pattern's own set, so schema and validation agree character by character.
- `WHOLE_NUMBER`: JSON Schema's `integer` is any number with no fractional part, so
  `88.0` is an integer to every client library; a strict pydantic `int` refused it. With
  `WHOLE_NUMBER` before a strict int, `88.0` is read as 88, while `"88"`, `true` and
  `88.5` stay refused, as the schema says.

NUL (`\\u0000`) is refused in every string by `RequestLimits`; `forbid_nul_in_strings`
writes that into every string schema of the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass
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
NO_NUL_PATTERN = "^[^\\u0000]*$"
"""A JSON Schema pattern: no NUL anywhere."""
TEXT_PATTERN = f"^[^\\u0000]*[^{_WHITESPACE_CLASS}\\u0000][^\\u0000]*$"
"""A JSON Schema pattern: something besides whitespace, and no NUL."""


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
        json_schema.update(minLength=1, maxLength=self.max_length, pattern=TEXT_PATTERN)
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


WHOLE_NUMBER = BeforeValidator(_whole_number)
"""Put before a strict `int`: `Annotated[int, WHOLE_NUMBER, Field(strict=True, ...)]`."""


def forbid_nul_in_strings(node: Any) -> None:
    """Adds `pattern: ^[^\\u0000]*$` to every string schema under `node` that has no
    pattern, format or enum of its own (those exclude NUL already)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "string"
            and not {"pattern", "format", "enum", "const"} & node.keys()
        ):
            node["pattern"] = NO_NUL_PATTERN
        for value in node.values():
            forbid_nul_in_strings(value)
    elif isinstance(node, list):
        for item in node:
            forbid_nul_in_strings(item)
