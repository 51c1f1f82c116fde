"""The loop's counters and histograms expose what prometheus_client's own would, after
the same increments and observations: the same series, labels and values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from dealflow_common.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
OBSERVED = (0.0, 0.004, 0.005, 0.0051, 0.3, 0.25, 7.0, 1.0, 0.02)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The registry's text exposition without the `_created` lines, whose values are
    when each series was made."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def created_lines(registry: CollectorRegistry) -> list[str]:
    """The names and labels of the `_created` series, without their values."""
    text = generate_latest(registry).decode()
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if "_created" in line]


def counted(counter_type: type, histogram_type: type) -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = counter_type(
        "dealflow_things", "Things done", ["method", "status"], registry=registry
    )
    statements = counter_type("dealflow_statements", "Statements sent", registry=registry)
    latency = histogram_type(
        "dealflow_thing_seconds", "Thing latency", ["route"], buckets=BUCKETS, registry=registry
    )
    overall = histogram_type(
        "dealflow_all_seconds", "All latency", buckets=(0.1, 1, float("inf")), registry=registry
    )
    for method, status in (("GET", "200"), ("GET", "200"), ("POST", "409"), ("GET", "404")):
        requests.labels(method, status).inc()
    requests.labels("POST", "409").inc(2.5)
    statements.inc()
    statements.inc(3)
    for amount in OBSERVED:
        latency.labels("/things/{id}").observe(amount)
        overall.observe(amount)
    latency.labels("/other").observe(0.01)
    return registry


def test_the_exposition_is_prometheus_clients_own() -> None:
    ours = counted(LoopCounter, LoopHistogram)
    theirs = counted(Counter, Histogram)

    assert exposition(ours) == exposition(theirs)
    assert created_lines(ours) == created_lines(theirs)
    assert ours.get_sample_value(
        "dealflow_things_total", {"method": "POST", "status": "409"}
    ) == pytest.approx(3.5)
    assert ours.get_sample_value(
        "dealflow_thing_seconds_bucket", {"route": "/things/{id}", "le": "0.005"}
    ) == pytest.approx(3)


def test_created_series_follow_prometheus_clients_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    assert created_lines(counted(LoopCounter, LoopHistogram)) == []


def test_label_values_are_taken_as_text_and_counted_once() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("dealflow_answers", "Answers", ["status"], registry=registry)
    counter.labels(200).inc()  # type: ignore[arg-type]
    counter.labels("200").inc()
    counter.labels(200).inc()  # type: ignore[arg-type]
    assert registry.get_sample_value("dealflow_answers_total", {"status": "200"}) == 3


def test_wrong_label_counts_and_a_second_name_are_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("dealflow_answers", "Answers", ["status"], registry=registry)
    with pytest.raises(ValueError, match="1 label values expected"):
        counter.labels("200", "extra")
    with pytest.raises(ValueError, match="label values are required"):
        counter.inc()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopCounter("dealflow_answers", "Again", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("dealflow_answers", "Theirs", registry=registry)


def test_a_counter_refuses_to_fall() -> None:
    registry = CollectorRegistry()
    labelled = LoopCounter("dealflow_answers", "Answers", ["status"], registry=registry)
    unlabelled = LoopCounter("dealflow_questions", "Questions", registry=registry)
    labelled.labels("200").inc(2)
    unlabelled.inc(2)
    with pytest.raises(ValueError, match="only grows"):
        labelled.labels("200").inc(-1)
    with pytest.raises(ValueError, match="only grows"):
        unlabelled.inc(-0.5)
    assert registry.get_sample_value("dealflow_answers_total", {"status": "200"}) == 2
    assert registry.get_sample_value("dealflow_questions_total") == 2
