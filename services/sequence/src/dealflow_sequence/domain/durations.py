"""ISO 8601 durations, as a sequence step's `after` and a task's `due` are written.

Weeks, days, hours, minutes and seconds (`P2D`, `PT4H`, `P1DT12H`, `P1W`). Years and
months are refused: their length depends on the calendar, and a follow-up "in a month"
is written `P30D` so that everyone reads the same due time. Negative durations are
refused: a step cannot fall due before the one it follows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from dealflow_common.errors import RuleViolated

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_CALENDAR = re.compile(r"^P[^T]*[YM]")
LONGEST = timedelta(days=3650)


class InvalidDuration(RuleViolated):
    def __init__(self, field: str, text: object, why: str) -> None:
        super().__init__(field, f"{text!r} is not a duration this service takes: {why}")


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration as written (kept for display) and its length."""

    text: str
    length: timedelta


def parse_duration(text: object, field: str) -> Duration:
    """The duration `text` names; `InvalidDuration` (naming `field`) when it is not one."""
    if not isinstance(text, str) or not text:
        raise InvalidDuration(field, text, "write an ISO 8601 duration such as P2D or PT4H")
    written = text.strip().upper()
    if written.startswith("-"):
        raise InvalidDuration(field, text, "a duration cannot be negative")
    found = _DURATION.match(written)
    if found is None or written in {"P", "PT"}:
        if _CALENDAR.match(written):
            raise InvalidDuration(
                field, text, "years and months have no fixed length; use weeks or days (P30D)"
            )
        raise InvalidDuration(field, text, "write an ISO 8601 duration such as P2D or PT4H")
    parts = {name: float(value) for name, value in found.groupdict().items() if value}
    length = timedelta(**parts)
    if length > LONGEST:
        raise InvalidDuration(field, text, "it is longer than ten years")
    return Duration(written, length)
