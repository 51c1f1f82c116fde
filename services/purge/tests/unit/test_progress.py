"""Every (state, trigger) pair of a deal's purge against a matrix written by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.errors import TransitionNotAllowed
from dealflow_purge.domain.progress import Backoff, DealPurge, PurgeState, Trigger

S, T = PurgeState, Trigger
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = PurgePolicySnapshot(version=1, retention_days_won=30, retention_days_lost=30)
BACKOFF = Backoff(timedelta(minutes=1), timedelta(minutes=10))
WITHIN = timedelta(minutes=2)

EXPECTED: dict[tuple[PurgeState, Trigger], PurgeState] = {
    (S.ELIGIBLE, T.REQUEST_QUOTES): S.QUOTES_REQUESTED,
    (S.QUOTES_REQUESTED, T.QUOTES_COMPLETED): S.QUOTES_PURGED,
    (S.QUOTES_REQUESTED, T.FAIL): S.FAILED,
    (S.QUOTES_PURGED, T.REQUEST_OPPORTUNITY): S.OPPORTUNITY_REQUESTED,
    (S.OPPORTUNITY_REQUESTED, T.OPPORTUNITY_PURGED): S.PURGED,
    (S.OPPORTUNITY_REQUESTED, T.FAIL): S.FAILED,
    (S.FAILED, T.REQUEST_QUOTES): S.QUOTES_REQUESTED,
    (S.FAILED, T.REQUEST_OPPORTUNITY): S.OPPORTUNITY_REQUESTED,
    (S.FAILED, T.QUOTES_COMPLETED): S.QUOTES_PURGED,
    (S.FAILED, T.OPPORTUNITY_PURGED): S.PURGED,
}


def fire(purge: DealPurge, trigger: Trigger) -> None:
    run = uuid.uuid4()
    match trigger:
        case T.REQUEST_QUOTES:
            purge.request_quotes(run, POLICY, NOW, WITHIN)
        case T.QUOTES_COMPLETED:
            purge.quotes_completed(2, NOW)
        case T.REQUEST_OPPORTUNITY:
            purge.request_opportunity(run, POLICY, NOW, WITHIN)
        case T.OPPORTUNITY_PURGED:
            purge.opportunity_purged(NOW)
        case T.FAIL:
            purge.fail("no answer", NOW, BACKOFF)


@pytest.mark.parametrize("state", list(PurgeState))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_state_and_trigger_moves_as_the_matrix_says(state, trigger) -> None:
    purge = DealPurge(uuid.uuid4(), uuid.uuid4(), state=state)
    expected = EXPECTED.get((state, trigger))
    if expected is None:
        with pytest.raises(TransitionNotAllowed) as refused:
            fire(purge, trigger)
        assert refused.value.state == state.value
        assert purge.state == state
        assert purge.events == []
    else:
        fire(purge, trigger)
        assert purge.state == expected


def test_quotes_are_requested_before_the_opportunity_and_each_step_sends_its_command() -> None:
    purge = DealPurge(uuid.uuid4(), uuid.uuid4())
    purge.request_quotes(purge.run_id, POLICY, NOW, WITHIN)
    purge.quotes_completed(3, NOW)
    purge.request_opportunity(purge.run_id, POLICY, NOW, WITHIN)
    purge.opportunity_purged(NOW)
    assert [e.event_type for e in purge.events] == [
        "quote.purge_requested",
        "opportunity.purge_requested",
    ]
    assert purge.events[1].quotes_purged == 3  # type: ignore[attr-defined]
    assert purge.state == S.PURGED


def test_a_step_without_answer_fails_and_is_retried_from_that_step_with_backoff() -> None:
    purge = DealPurge(uuid.uuid4(), uuid.uuid4())
    purge.request_quotes(purge.run_id, POLICY, NOW, WITHIN)
    assert not purge.is_overdue(NOW + WITHIN - timedelta(seconds=1))
    assert purge.is_overdue(NOW + WITHIN)
    purge.fail("no answer", NOW + WITHIN, BACKOFF)
    assert purge.retry_step() == T.REQUEST_QUOTES
    assert purge.next_attempt_at == NOW + WITHIN + timedelta(minutes=1)
    assert purge.events[-1].event_type == "purge.opportunity_failed"
    purge.request_quotes(purge.run_id, POLICY, NOW, WITHIN)
    purge.quotes_completed(0, NOW)
    purge.request_opportunity(purge.run_id, POLICY, NOW, WITHIN)
    purge.fail("no answer", NOW, BACKOFF)
    assert (purge.retry_step(), purge.attempts) == (T.REQUEST_OPPORTUNITY, 3)
    assert purge.next_attempt_at == NOW + timedelta(minutes=4)


def test_backoff_doubles_up_to_its_longest_wait() -> None:
    assert [BACKOFF.after(n).total_seconds() / 60 for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
