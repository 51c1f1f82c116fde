"""The pure parts of `make bench`: how calls are spread over replicas, how their figures
are summed, and how the invariants judge what a run left behind."""

from __future__ import annotations

import time
from collections import Counter

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from bench.deals import (
    Counted,
    RoundRobin,
    batches_read,
    by_service,
    copies_counted,
    copies_per_deal,
    events_consumed,
    events_per_deal,
    in_load_client_units,
    per_deal,
    replica_name,
)
from bench.invariants import (
    CompletedDeal,
    Observed,
    Opportunity,
    Order,
    committed_lag,
    from_metrics,
    violations,
)
from bench.measure import machine_context_switches, reference_cpu_ms, reference_round_trip_us
from dealflow_common.messaging.consumer import ConsumerMetrics
from dealflow_common.messaging.kafka import ConsumerLoopMetrics
from dealflow_common.recent import RecentCopies

DEAL = CompletedDeal("opp-1", accepted_quote="quote-a", abandoned_quotes=("quote-b",))


def settled() -> Observed:
    """What a deal that went right leaves: won once with A, one order, B abandoned."""
    return Observed(
        opportunities={"opp-1": Opportunity("closed_won", "quote-a", "order-1")},
        closed_won_moves=Counter({"opp-1": 1}),
        quote_status={"quote-a": "accepted", "quote-b": "abandoned"},
        orders={"opp-1": [Order("order-1", "quote-a")]},
        events=Counter(
            {
                ("opp-1", "opportunity.won"): 1,
                ("opp-1", "quote.accepted"): 1,
                ("opp-1", "order.created"): 1,
            }
        ),
        unsent={"opportunity": 0, "quote": 0},
        dead_letters={"dealflow.quote.events.dlq": 0},
        lag={"order-service": 0},
        reported_lag={"order-service": 0.0},
    )


def test_one_deals_calls_go_to_each_replica_in_turn() -> None:
    replicas = RoundRobin({"quote": ["http://q1", "http://q2"], "opportunity": ["http://o1"]})

    quote_calls = [replicas.next("quote") for _ in range(5)]
    opportunity_calls = [replicas.next("opportunity") for _ in range(2)]

    assert quote_calls == ["http://q1", "http://q2", "http://q1", "http://q2", "http://q1"]
    assert opportunity_calls == ["http://o1", "http://o1"]


def test_each_service_keeps_its_own_turn() -> None:
    replicas = RoundRobin({"quote": ["q1", "q2"], "order": ["r1", "r2"]})

    assert [replicas.next("quote"), replicas.next("order"), replicas.next("quote")] == [
        "q1",
        "r1",
        "q2",
    ]


def test_a_service_run_once_reports_under_its_own_name() -> None:
    assert replica_name("quote", 1, 1) == "quote"
    assert [replica_name("quote", n, 2) for n in (1, 2)] == ["quote#1", "quote#2"]


def test_replicas_cpu_is_summed_under_their_service_and_the_rest_kept() -> None:
    service_of = {"quote#1": "quote", "quote#2": "quote", "console": "console"}

    summed = by_service({"quote#1": 1.5, "quote#2": 0.5, "console": 0.1, "broker": 2.0}, service_of)

    assert summed == {"quote": 2.0, "console": 0.1, "broker": 2.0}


def test_a_deal_that_went_right_breaks_nothing() -> None:
    assert violations([DEAL], settled()) == []


def test_a_deal_won_twice_is_named() -> None:
    seen = settled()
    seen.closed_won_moves["opp-1"] = 2
    seen.events[("opp-1", "opportunity.won")] = 2

    assert violations([DEAL], seen) == [
        "deal opp-1: moved to closed_won 2 times",
        "deal opp-1: 2 opportunity.won events",
    ]


def test_a_second_order_is_a_violation() -> None:
    seen = settled()
    seen.orders["opp-1"].append(Order("order-2", "quote-a"))
    seen.events[("opp-1", "order.created")] = 2

    assert violations([DEAL], seen) == [
        "deal opp-1: 2 orders",
        "deal opp-1: 2 order.created events",
    ]


def test_a_missing_order_and_a_deal_left_open_are_violations() -> None:
    seen = settled()
    seen.opportunities["opp-1"] = Opportunity("negotiation", None, None)
    seen.closed_won_moves = Counter()
    del seen.orders["opp-1"]

    assert violations([DEAL], seen) == [
        "deal opp-1: negotiation, not closed_won",
        "deal opp-1: won with quote None, not quote-a",
        "deal opp-1: moved to closed_won 0 times",
        "deal opp-1: 0 orders",
    ]


def test_an_order_the_opportunity_does_not_record_is_a_violation() -> None:
    seen = settled()
    seen.opportunities["opp-1"] = Opportunity("closed_won", "quote-a", "order-9")

    assert violations([DEAL], seen) == ["deal opp-1: records order order-9, not order-1"]


def test_quotes_in_the_wrong_state_are_named() -> None:
    seen = settled()
    seen.quote_status = {"quote-a": "accept_pending", "quote-b": "presented"}

    assert violations([DEAL], seen) == [
        "deal opp-1: accepted quote quote-a is accept_pending",
        "deal opp-1: quote quote-b is presented, not abandoned",
    ]


def test_a_deal_with_no_row_is_reported_alone() -> None:
    seen = settled()
    seen.opportunities = {}

    assert violations([DEAL], seen) == ["deal opp-1: no opportunity row"]


def test_unsent_rows_dead_letters_and_lag_are_violations() -> None:
    seen = settled()
    seen.unsent["quote"] = 3
    seen.dead_letters["dealflow.quote.events.dlq"] = 1
    seen.lag["order-service"] = 4
    seen.reported_lag["order-service"] = 2.0

    assert violations([], seen) == [
        "quote: 3 outbox rows unsent",
        "dealflow.quote.events.dlq: 1 dead letters",
        "consumer group order-service: 4 behind",
        "consumer group order-service: its members report 2 behind",
    ]


def test_committed_lag_counts_what_the_group_has_not_committed_on_topics_it_reads() -> None:
    opportunity, quote = "dealflow.opportunity.events", "dealflow.quote.events"
    ends = {
        TopicPartition(opportunity, 0): 10,
        TopicPartition(opportunity, 1): 5,
        TopicPartition(quote, 0): 7,
    }
    committed: dict[TopicPartition, int | None] = {
        TopicPartition(opportunity, 0): 8,
        TopicPartition(opportunity, 1): None,  # read, never committed: all 5 behind
        TopicPartition(quote, 0): None,  # a topic the group does not read
    }

    assert committed_lag(committed, ends) == 2 + 5


def test_a_group_at_the_end_of_every_partition_has_no_lag() -> None:
    ends = {TopicPartition("t", 0): 10, TopicPartition("t", 1): 0}

    assert committed_lag({TopicPartition("t", 0): 10, TopicPartition("t", 1): None}, ends) == 0


def test_lag_and_skipped_duplicates_are_summed_over_replicas() -> None:
    expositions = []
    for lag, duplicates in ((3, 2), (1, 5)):
        registry = CollectorRegistry()
        ConsumerLoopMetrics(registry).lag.labels("quote-service").set(lag)
        consumed = ConsumerMetrics(registry).events
        consumed.labels("quote-service", "opportunity.won", "duplicate").inc(duplicates)
        consumed.labels("quote-service", "opportunity.won", "applied").inc(100)
        expositions.append(generate_latest(registry).decode())
    seen = Observed()

    from_metrics(expositions, seen)

    assert seen.reported_lag == {"quote-service": 4.0}
    assert seen.duplicates_skipped == 7


def test_records_per_deal_are_counted_by_group_and_outcome_over_the_window() -> None:
    registry = CollectorRegistry()
    consumed = ConsumerMetrics(registry).events
    batches = ConsumerLoopMetrics(registry).batches

    def now() -> Counted:
        text = generate_latest(registry).decode()
        counted = Counted({}, {})
        for (group, outcome), value in events_consumed(text).items():
            counted.events.setdefault(group, {})[outcome] = value
        counted.batches.update(batches_read(text))
        return counted

    consumed.labels("order-service", "quote.created", "ignored").inc(7)  # before the window
    batches.labels("order-service").inc(3)
    before = now()
    batches.labels("order-service").inc(25)
    batches.labels("purge-service").inc(2)
    consumed.labels("order-service", "quote.accepted", "applied").inc(10)
    consumed.labels("order-service", "opportunity.won", "applied").inc(10)
    consumed.labels("order-service", "quote.created", "ignored").inc(20)
    consumed.labels("purge-service", "opportunity.won", "duplicate").inc(5)

    figures = events_per_deal(before, now(), deals=10)

    assert figures["order-service"] == {
        "applied": 2.0,
        "ignored": 2.0,
        "records": 4.0,
        "batches": 2.5,
    }
    assert figures["purge-service"] == {"duplicate": 0.5, "records": 0.5, "batches": 0.2}
    assert figures["total"] == {"records": 4.5, "applied": 2.0, "batches": 2.7}


def test_round_trips_per_deal_are_the_statements_with_their_transaction_statements() -> None:
    before = {
        "quote": {
            "dealflow_db_statements_total": 100.0,
            "dealflow_db_commits_total": 40.0,
            "dealflow_db_transaction_statements_total": 10.0,
        }
    }
    after = {
        "quote": {
            "dealflow_db_statements_total": 250.0,
            "dealflow_db_commits_total": 100.0,
            "dealflow_db_transaction_statements_total": 30.0,
        },
        # A service whose counters appear only now (a replica started in the window).
        "order": {"dealflow_db_statements_total": 20.0, "dealflow_db_commits_total": 10.0},
    }

    figures = per_deal(before, after, deals=10)

    assert figures["statements"] == {"quote": 15.0, "order": 2.0, "total": 17.0}
    assert figures["commits"] == {"quote": 6.0, "order": 1.0, "total": 7.0}
    assert figures["transaction_statements"] == {"quote": 2.0, "order": 0.0, "total": 2.0}
    assert figures["round_trips"] == {"quote": 17.0, "order": 2.0, "total": 19.0}


def test_the_machines_context_switches_are_counted_and_grow() -> None:
    before = machine_context_switches()
    time.sleep(0.01)  # this process sleeps: one switch at least
    assert machine_context_switches() > before > 0


def test_the_reference_work_is_measured_in_this_process_cpu() -> None:
    # 20,000 JSON round trips with Decimal arithmetic take milliseconds of CPU on any
    # machine: a measure that counted nothing, or seconds as milliseconds, falls outside.
    measured = reference_cpu_ms(repeats=1)
    assert 1.0 < measured < 5_000.0
    assert measured == round(measured, 1)


def test_a_loopback_round_trip_is_measured_in_both_processes_cpu() -> None:
    # A round trip to another process costs microseconds of CPU on any machine: a
    # measure that counted nothing, or the whole run as one trip, falls outside.
    measured = reference_round_trip_us(repeats=1, round_trips=200)
    assert 1.0 < measured < 10_000.0
    assert measured == round(measured, 1)


def test_copies_per_deal_are_counted_by_outcome_over_the_window() -> None:
    registry = CollectorRegistry()
    recent: RecentCopies[str, int] = RecentCopies(10, int, int, registry, kind="opportunity")
    deals: RecentCopies[str, int] = RecentCopies(10, int, int, registry, kind="deal")

    def now() -> Counted:
        counted = Counted({}, {})
        for (kind, outcome), value in copies_counted(generate_latest(registry).decode()).items():
            counted.copies[kind, outcome] = value
        return counted

    recent.keep("a", 1)
    deals.keep("a", 1)
    recent.take("a")  # before the window
    before = now()
    for _ in range(6):
        recent.take("a")
    recent.refused("a")
    deals.take("a")
    # Both outcomes of every kind are counted from the start, a refusal never seen at 0.
    assert copies_per_deal(before, now(), deals=3) == {
        "deal": {"refused": 0.0, "served": 0.33},
        "opportunity": {"refused": 0.33, "served": 2.0},
    }


def test_the_deals_cpu_is_given_in_units_of_the_load_clients() -> None:
    cpu = {"quote": 8.0, "opportunity": 6.0, "load client": 2.0, "total": 16.0}
    assert in_load_client_units(cpu) == 8.0  # every process, the total not counted twice
    slower_hour = {name: value * 1.3 for name, value in cpu.items()}
    assert in_load_client_units(slower_hour) == 8.0
    assert in_load_client_units({"quote": 8.0, "total": 8.0}) is None
