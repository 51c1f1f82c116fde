"""Which deals a report covers: the filters people give in the query string."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from dealflow_common.contracts.opportunity import LeadOrigin
from dealflow_common.errors import RuleViolated


class GroupBy(StrEnum):
    """What a forecast or an analytics report is broken down by."""

    NONE = "none"
    OWNER = "owner"
    TEAM = "team"


@dataclass(frozen=True, slots=True)
class DealFilter:
    owner: str | None = None
    team: str | None = None
    customer: str | None = None
    lead_origin: LeadOrigin | None = None
    expected_close_from: date | None = None
    expected_close_to: date | None = None
    """Inclusive bounds of the expected close date."""

    def __post_init__(self) -> None:
        if (
            self.expected_close_from is not None
            and self.expected_close_to is not None
            and self.expected_close_from > self.expected_close_to
        ):
            raise RuleViolated(
                "expected_close_to",
                f"{self.expected_close_to} is before expected_close_from "
                f"{self.expected_close_from}",
            )
