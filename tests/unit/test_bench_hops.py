"""The half load's accept-to-won split (`bench.hops`): one deal's parts, and their
summary over deals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.hops import (
    ACCEPTANCE_REQUESTED,
    ACCEPTED,
    PARTS,
    WON,
    AcceptTimes,
    SeenOnKafka,
    parts_of,
    summarise,
)

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
START_MS = START.timestamp() * 1000


def at(ms: float) -> datetime:
    return START + timedelta(milliseconds=ms)


WRITTEN = {
    "requested_written": at(5),
    "requested_applied": at(45),
    "won_written": at(52),
    "won_applied": at(90),
    "accepted_written": at(99),
}
ON_KAFKA = {
    ACCEPTANCE_REQUESTED: SeenOnKafka(START_MS + 15, START_MS + 16),
    WON: SeenOnKafka(START_MS + 60, START_MS + 61),
    ACCEPTED: SeenOnKafka(START_MS + 110, START_MS + 130),
}


def test_a_deals_parts_follow_it_in_order_and_add_up_to_its_latency() -> None:
    seen = AcceptTimes("opp-1", START_MS, ON_KAFKA)
    parts = parts_of(seen, WRITTEN)
    assert parts is not None
    assert len(parts) == len(PARTS)
    assert parts == pytest.approx([5, 10, 30, 7, 8, 30, 9, 11, 20])
    assert sum(parts) == pytest.approx(130)


def test_a_deal_not_seen_whole_on_kafka_has_no_parts() -> None:
    partly = {t: s for t, s in ON_KAFKA.items() if t != WON}
    assert parts_of(AcceptTimes("opp-1", START_MS, partly), WRITTEN) is None


def test_the_summary_gives_each_parts_mean_and_percentiles() -> None:
    per_deal = [[float(n)] * len(PARTS) for n in range(1, 101)]
    summary = summarise(per_deal)
    assert list(summary) == [name for name, _ in PARTS]
    assert summary["quote relay"] == {"mean": 50.5, "p50": 51.0, "p99": 100.0}
    assert summarise([])["in quote"] == {"mean": None, "p50": None, "p99": None}
