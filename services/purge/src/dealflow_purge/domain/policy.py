"""The purge policy: how long closed deals are kept, how many go per batch, and when,
and whether each run writes a journal of what it purged (like Sterling's purge log).

A policy is checked whole before it is stored, so an operator's bad input names the
field at fault and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.errors import RuleViolated

DEFAULT_RETENTION_DAYS = 30
DEFAULT_BATCH_SIZE = 100
DEFAULT_SCHEDULE = "0 * * * *"
"""Hourly, on the hour (a five-field crontab expression, UTC)."""
MAX_RETENTION_DAYS = 36_500


class CronSchedule(Protocol):
    """Reads crontab expressions (an adapter implements it; the domain stays pure)."""

    def next_after(self, expression: str, moment: datetime) -> datetime:
        """The first fire time after `moment`; ValueError when the expression is invalid."""
        ...


@dataclass(frozen=True)
class PurgePolicy:
    retention_days_won: int = DEFAULT_RETENTION_DAYS
    retention_days_lost: int = DEFAULT_RETENTION_DAYS
    batch_size: int = DEFAULT_BATCH_SIZE
    schedule: str = DEFAULT_SCHEDULE
    version: int = 1
    journal: bool = False
    """Each run writes a JSON Lines journal of the deals it purged, skipped or failed."""

    def retention(self, outcome: Stage) -> timedelta:
        if outcome == Stage.CLOSED_WON:
            return timedelta(days=self.retention_days_won)
        if outcome == Stage.CLOSED_LOST:
            return timedelta(days=self.retention_days_lost)
        raise ValueError(f"{outcome} is not a closed stage")

    def snapshot(self) -> PurgePolicySnapshot:
        return PurgePolicySnapshot(
            version=self.version,
            retention_days_won=self.retention_days_won,
            retention_days_lost=self.retention_days_lost,
        )


def checked_policy(
    *,
    retention_days_won: int,
    retention_days_lost: int,
    batch_size: int,
    schedule: str,
    version: int,
    max_batch_size: int,
    cron: CronSchedule,
    now: datetime,
    journal: bool = False,
) -> PurgePolicy:
    """The policy, or RuleViolated naming the first field that breaks a rule."""
    for field, days in (
        ("retention_days_won", retention_days_won),
        ("retention_days_lost", retention_days_lost),
    ):
        if not 0 <= days <= MAX_RETENTION_DAYS:
            raise RuleViolated(field, f"must be between 0 and {MAX_RETENTION_DAYS} days")
    if not 1 <= batch_size <= max_batch_size:
        raise RuleViolated("batch_size", f"must be between 1 and {max_batch_size}")
    try:
        cron.next_after(schedule, now)
    except ValueError as error:
        raise RuleViolated("schedule", f"not a valid cron expression: {error}") from None
    return PurgePolicy(
        retention_days_won, retention_days_lost, batch_size, schedule, version, journal
    )
