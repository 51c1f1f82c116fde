"""Crontab expressions read by APScheduler's cron trigger (the domain's `CronSchedule`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger


class CrontabSchedule:
    def next_after(self, expression: str, moment: datetime) -> datetime:
        if len(expression.split()) != 5:
            raise ValueError("expected five fields: minute hour day month weekday")
        trigger = CronTrigger.from_crontab(expression, timezone=UTC)
        found = trigger.get_next_fire_time(None, moment)
        if found is None:
            raise ValueError("the expression never fires")
        # get_next_fire_time may answer `moment` itself; the next run is strictly later.
        if found <= moment:
            found = trigger.get_next_fire_time(found, found + timedelta(seconds=1))
        if found is None:
            raise ValueError("the expression never fires")
        return found.astimezone(UTC)
