"""Reporting periods: a month or a quarter of the calendar, by its label.

Labels are what people write and read: `2026-07` is July 2026, `2026-Q3` the third
quarter of 2026. A label that does not parse, or that is of the other granularity than
the report's, is refused naming the field it came in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

from dealflow_common.errors import RuleViolated


class Granularity(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"


class PeriodUnparsable(RuleViolated):
    def __init__(self, field: str, text: str, granularity: Granularity) -> None:
        example = "2026-07" if granularity == Granularity.MONTH else "2026-Q3"
        super().__init__(field, f"{text!r} is not a {granularity.value} such as {example}")


_MONTH: Final = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER: Final = re.compile(r"^(\d{4})-Q([1-4])$")


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One month (index 1..12) or one quarter (index 1..4) of a year."""

    year: int
    index: int
    granularity: Granularity

    @classmethod
    def containing(cls, year: int, month: int, granularity: Granularity) -> Period:
        index = month if granularity == Granularity.MONTH else (month - 1) // 3 + 1
        return cls(year, index, granularity)

    @classmethod
    def of(cls, day: date, granularity: Granularity) -> Period:
        return cls.containing(day.year, day.month, granularity)

    @classmethod
    def parse(cls, text: str, granularity: Granularity, field: str) -> Period:
        pattern = _MONTH if granularity == Granularity.MONTH else _QUARTER
        match = pattern.match(text.strip())
        if match is None:
            raise PeriodUnparsable(field, text, granularity)
        return cls(int(match.group(1)), int(match.group(2)), granularity)

    @property
    def label(self) -> str:
        if self.granularity == Granularity.MONTH:
            return f"{self.year:04d}-{self.index:02d}"
        return f"{self.year:04d}-Q{self.index}"

    @property
    def first_day(self) -> date:
        month = self.index if self.granularity == Granularity.MONTH else 3 * self.index - 2
        return date(self.year, month, 1)

    @property
    def last_day(self) -> date:
        """The last day of the period (inclusive)."""
        month = self.index if self.granularity == Granularity.MONTH else 3 * self.index
        if month == 12:
            return date(self.year, 12, 31)
        return date.fromordinal(date(self.year, month + 1, 1).toordinal() - 1)
