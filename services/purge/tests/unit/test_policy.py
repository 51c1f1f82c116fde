"""The purge policy's rules, and which deals are eligible under it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.errors import RuleViolated
from dealflow_purge.adapters.schedule import CrontabSchedule
from dealflow_purge.domain.eligibility import Kept, KnownDeal, kept_because
from dealflow_purge.domain.policy import PurgePolicy, checked_policy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def policy(**overrides):
    values = {
        "retention_days_won": 30,
        "retention_days_lost": 10,
        "batch_size": 100,
        "schedule": "0 * * * *",
        "version": 2,
        "max_batch_size": 1000,
        "cron": CrontabSchedule(),
        "now": NOW,
    }
    return checked_policy(**{**values, **overrides})


def test_a_valid_policy_is_kept_as_given() -> None:
    assert policy() == PurgePolicy(30, 10, 100, "0 * * * *", 2)
    assert policy(retention_days_won=0, batch_size=1000).batch_size == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retention_days_won", -1),
        ("retention_days_lost", -5),
        ("retention_days_lost", 40_000),
        ("batch_size", 0),
        ("batch_size", 1001),
        ("schedule", "every hour"),
        ("schedule", "61 * * * *"),
        ("schedule", "* * *"),
    ],
)
def test_a_policy_breaking_a_rule_names_the_field(field, value) -> None:
    with pytest.raises(RuleViolated) as refused:
        policy(**{field: value})
    assert refused.value.field == field


def deal(stage: Stage, closed_days_ago: float | None) -> KnownDeal:
    closed = None if closed_days_ago is None else NOW - timedelta(days=closed_days_ago)
    return KnownDeal(uuid.uuid4(), stage, closed)


@pytest.mark.parametrize(
    ("stage", "days", "on_hold", "kept"),
    [
        (Stage.CLOSED_WON, 31, False, None),
        (Stage.CLOSED_LOST, 11, False, None),
        (Stage.CLOSED_WON, 29, False, Kept.WITHIN_RETENTION),
        (Stage.CLOSED_LOST, 9, False, Kept.WITHIN_RETENTION),
        (Stage.CLOSED_WON, 31, True, Kept.ON_HOLD),
        (Stage.NEGOTIATION, None, False, Kept.NOT_CLOSED),
        (Stage.PURGED, 100, False, Kept.ALREADY_PURGED),
    ],
)
def test_eligible_only_when_closed_past_its_outcomes_retention_and_not_on_hold(
    stage, days, on_hold, kept
) -> None:
    rule = PurgePolicy(retention_days_won=30, retention_days_lost=10)
    assert kept_because(deal(stage, days), rule, NOW, on_hold=on_hold) == kept
