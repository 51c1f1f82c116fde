"""`UtcDateTime`: every moment written and read is in UTC, and a naive one is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql

from dealflow_common.db import UtcDateTime

DIALECT = postgresql.dialect()
MOMENT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_utc_moment_is_written_and_read_as_it_is() -> None:
    assert UtcDateTime().process_bind_param(MOMENT, DIALECT) is MOMENT
    assert UtcDateTime().process_result_value(MOMENT, DIALECT) is MOMENT


def test_a_moment_in_another_zone_is_turned_to_utc_both_ways() -> None:
    paris = MOMENT.astimezone(timezone(timedelta(hours=1)))
    for moment in (
        UtcDateTime().process_bind_param(paris, DIALECT),
        UtcDateTime().process_result_value(paris, DIALECT),
    ):
        assert moment == MOMENT
        assert moment is not None
        assert moment.tzinfo is UTC


def test_a_naive_moment_is_refused_when_written_and_taken_as_utc_when_read() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().process_bind_param(MOMENT.replace(tzinfo=None), DIALECT)
    assert UtcDateTime().process_result_value(MOMENT.replace(tzinfo=None), DIALECT) == MOMENT
