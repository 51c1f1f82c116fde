"""The stale-deal rule: quiet for the period with no open future task, once per quiet
period; past its expected close date, once per date."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.contracts.sequence import StaleReason
from dealflow_sequence.domain.deal import KnownDeal

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def deal(last_activity: datetime, **fields: object) -> KnownDeal:
    found = KnownDeal(uuid.uuid4(), Stage.PROPOSAL, ["alice"], "emea", "alice", last_activity)
    for name, value in fields.items():
        setattr(found, name, value)
    return found


def reasons(d: KnownDeal, now: datetime = NOW, future_task: bool = False) -> list[StaleReason]:
    return d.stale_reasons(now=now, quiet=WEEK, has_open_future_task=future_task)


def test_a_quiet_deal_is_reported_once_then_again_only_after_new_activity() -> None:
    quiet = deal(NOW - WEEK)
    assert reasons(quiet) == [StaleReason.INACTIVE]
    quiet.report_stale(StaleReason.INACTIVE, NOW)
    assert reasons(quiet, NOW + timedelta(days=3)) == []
    quiet.touch(NOW + timedelta(days=4))  # new activity
    assert reasons(quiet, NOW + timedelta(days=5)) == []  # not quiet long enough yet
    assert reasons(quiet, NOW + timedelta(days=11)) == [StaleReason.INACTIVE]


def test_an_open_future_task_or_a_closed_deal_or_recent_activity_is_not_stale() -> None:
    assert reasons(deal(NOW - WEEK), future_task=True) == []
    assert reasons(deal(NOW - WEEK + timedelta(minutes=1))) == []
    assert reasons(deal(NOW - 4 * WEEK, stage=Stage.CLOSED_LOST)) == []


def test_a_past_close_date_is_reported_once_per_date() -> None:
    late = deal(NOW, expected_close_date=date(2026, 11, 23))
    assert reasons(late) == [StaleReason.CLOSE_DATE_PAST]
    late.report_stale(StaleReason.CLOSE_DATE_PAST, NOW)
    assert reasons(late) == []
    late.expected_close_date = date(2026, 11, 20)
    assert reasons(late) == [StaleReason.CLOSE_DATE_PAST]
    assert (
        deal(NOW, expected_close_date=NOW.date()).stale_reasons(
            now=NOW, quiet=WEEK, has_open_future_task=False
        )
        == []
    )
