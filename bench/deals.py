"""`make bench`: the deal benchmark. Not a test: it measures and prints a JSON report.

Starts the embedded stack (Tansu and every service as its own process) on a fresh
PostgreSQL database, then, for each run:

1. saturation: N deals through the REST API by C concurrent clients, closed loop. One
   deal: create opportunity, move to qualification, quote A (one line), move to
   proposal, present A, create and present quote B, abandon B, move to negotiation,
   accept A, and wait until the opportunity is closed_won, A accepted and A's order
   created (observed on Kafka, as any subscriber would, so waiting costs no HTTP calls):
   a deal is complete when its order exists. Accept-to-won and accept-to-order are
   reported side by side;
2. the database's own commit rate on a trivial one-row update with 32 connections,
   measured right after, as the baseline our commit rate is compared with;
3. half load: deals started at half the measured throughput (open loop), for latency;
4. stage moves: 4 clients move their own deal back and forth between lead and
   qualification, 2,000 moves: the opportunity service's CPU per move, one kind of
   request on one process, where a change to the request path shows without the rest
   of the deal around it.

Before the saturation window, the system is sampled idle: each process's CPU a second
with no deal in flight.

Every figure is reported per run and as the median over the runs. After the last run,
once the outboxes and consumer groups have drained, the invariants of `bench.invariants`
are checked; a violation makes the command exit non-zero after printing the report.

`--replicas N` runs N processes of every service that has a schema (all of a service's
replicas share its schema and its consumer groups), spreads the HTTP calls over them in
turn, and creates the topics with at least N partitions. CPU per deal is summed over a
service's replicas; the `replicas` section repeats the figures to set beside the same
command run without `--replicas`.

    make bench                                  # defaults below
    make bench BENCH_ARGS="--deals 2000 --concurrency 64 --runs 5"
    make bench BENCH_ARGS="--replicas 2"        # two processes of each service
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform as host_platform
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uvloop
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from bench.hops import PARTS, SAGA_EVENTS, AcceptTimes, SeenOnKafka, accept_to_won_parts
from bench.http import JsonClient
from bench.invariants import (
    CompletedDeal,
    Observed,
    OffsetsReader,
    from_database,
    from_metrics,
    labelled_by,
    outbox_schemas,
    summary,
    unsent,
    violations,
)
from bench.measure import (
    RESULTS,
    CpuSampler,
    bench_service,
    compare_with_previous,
    cpu_seconds,
    keep_report,
    percentiles,
    reference_cpu_ms,
    reference_round_trip_us,
    scrape_counters,
)
from dealflow_common.auth import mint_token
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, ORDER_EVENTS, QUOTE_EVENTS
from dealflow_common.messaging.aiokafka_uvloop import tolerate_closed_connections
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.embedded import (
    EMBEDDED_PARTITIONS,
    secret_names,
)
from dealflow_common.runtime.processes import (
    ServiceProcess,
    installed_services,
    owns_database,
)
from dealflow_common.settings import ServiceSettings

HTTP_CALLS_PER_DEAL = 10
BENCH_DATABASE = "dealflow_bench"
# Backends report their commit counts to pg_stat_database when a transaction ends (at
# most once a second) or after 10 s idle: wait this long before reading the counter.
STATS_SETTLE_SECONDS = 11.0
# The settle wait's first seconds let the warm-up's last records drain; its rest is
# measured as the idle window.
IDLE_SETTLE_SECONDS = 3.0
# The longest wait after the last run for the relays to publish and the consumer groups
# to catch up before the invariants are judged.
DRAIN_SECONDS = 60.0
DEFAULT_PARTITIONS = EMBEDDED_PARTITIONS


@dataclass
class Milestones:
    """When the watcher saw the deal won (won and quote accepted) and its order created."""

    won_at: float | None = None
    order_at: float | None = None
    on_kafka: dict[str, SeenOnKafka] = field(default_factory=dict)
    """The accept saga's events (`bench.hops`), by type."""


class WonWatcher:
    """Sees each deal's `opportunity.won`, `quote.accepted` and `order.created` arrive
    on Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            OPPORTUNITY_EVENTS,
            QUOTE_EVENTS,
            ORDER_EVENTS,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            # Tansu answers a held fetch only when its wait is over: each milestone is
            # seen up to this late, and each poll costs the broker and this client CPU
            # inside the measured window (at 10 ms, about a fifth of this client's).
            fetch_max_wait_ms=25,
        )
        self._waiting: dict[str, tuple[str, asyncio.Future[Milestones], set[str], Milestones]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.getmany(timeout_ms=500)  # fixes the starting positions
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def expect(self, opportunity_id: str, quote_id: str) -> asyncio.Future[Milestones]:
        future: asyncio.Future[Milestones] = asyncio.get_running_loop().create_future()
        self._waiting[opportunity_id] = (quote_id, future, {"won", "accepted"}, Milestones())
        return future

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            seen_at = time.perf_counter()
            seen_wall_ms = time.time() * 1000
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    self._note(event, seen_at, SeenOnKafka(record.timestamp, seen_wall_ms))

    def _note(self, event: dict[str, Any], seen_at: float, on_kafka: SeenOnKafka) -> None:
        waiting = self._waiting.get(event["subject"])
        if waiting is None:
            return
        quote_id, future, missing, seen = waiting
        data = event["data"]
        if event["type"] in SAGA_EVENTS:
            seen.on_kafka.setdefault(event["type"], on_kafka)
        if event["type"] == "opportunity.won" and data.get("won_quote_id") == quote_id:
            missing.discard("won")
        elif event["type"] == "quote.accepted" and data.get("quote_id") == quote_id:
            missing.discard("accepted")
        elif event["type"] == "order.created" and data.get("quote_id") == quote_id:
            seen.order_at = seen.order_at or seen_at
        if not missing and seen.won_at is None:
            seen.won_at = seen_at
        if seen.won_at is not None and seen.order_at is not None and not future.done():
            future.set_result(seen)
            del self._waiting[event["subject"]]


@dataclass
class DealResult:
    create_to_won_ms: float
    accept_to_won_ms: float
    accept_to_order_ms: float
    create_to_order_ms: float
    accept_times: AcceptTimes


def replica_name(service: str, number: int, count: int) -> str:
    """`quote#2`; a service run once keeps its own name, so one replica reports as before."""
    return service if count == 1 else f"{service}#{number}"


class RoundRobin:
    """Each service's replicas in turn, call by call, as a load balancer would send them:
    the calls of one deal land on different replicas."""

    def __init__(self, urls: Mapping[str, Sequence[str]]) -> None:
        self._urls = {service: list(found) for service, found in urls.items()}
        self._turns = {service: itertools.count() for service in urls}

    def next(self, service: str) -> str:
        urls = self._urls[service]
        return urls[next(self._turns[service]) % len(urls)]


def by_service(figures: Mapping[str, float], service_of: Mapping[str, str]) -> dict[str, float]:
    """Figures of replicas summed under their service; other names (the broker,
    PostgreSQL's backends) as they are."""
    summed: dict[str, float] = {}
    for name, value in figures.items():
        owner = service_of.get(name, name)
        summed[owner] = summed.get(owner, 0.0) + value
    return summed


LOAD_CLIENT = "load client"


def in_load_client_units(cpu_ms_per_deal: Mapping[str, float]) -> float | None:
    """The deal's CPU over every process, in units of the load client's CPU per deal.

    The load client does the same work for every deal whatever the code under test, yet
    its CPU per deal moves with the host's hour as every process's does (1.26 to 1.81 ms
    over four runs of one build, the whole deal 24.8 to 34.1 ms), which the reference
    work before a run does not always see. The ratio moved far less (18.8 to 19.7): a
    figure to compare builds measured at different hours. None without a load client."""
    client = cpu_ms_per_deal.get(LOAD_CLIENT, 0.0)
    if client <= 0:
        return None
    return round(sum(v for name, v in cpu_ms_per_deal.items() if name != "total") / client, 2)


@dataclass
class Driver:
    http: JsonClient
    replicas: RoundRobin
    watcher: WonWatcher
    failures: list[str] = field(default_factory=list)
    completed: list[CompletedDeal] = field(default_factory=list)
    """Every deal seen through to its order, warm-up included: the invariants' scope."""

    async def _call(self, method: str, service: str, path: str, body: Any = None) -> dict[str, Any]:
        origin = self.replicas.next(service)
        status, payload = await self.http.request(method, origin, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {origin}{path} -> {status}: {payload}")
        return dict(payload)

    async def open_deal(self, title: str, amount: str) -> str:
        """Open a deal for the bench's customer; its id."""
        body = {
            "title": title,
            "customer": {"kind": "organization", "id": "bench", "name": "Bench Corp"},
            "value": {"amount": amount, "currency": "USD"},
        }
        return str((await self._call("POST", "opportunity", "/opportunities", body))["id"])

    async def move(self, deal: str, stage: str) -> None:
        await self._call("POST", "opportunity", f"/opportunities/{deal}/stage", {"stage": stage})

    async def deal(self) -> DealResult | None:
        started = time.perf_counter()
        try:
            deal = await self.open_deal("Bench deal", "1000.00")
            await self.move(deal, "qualification")
            line = {
                "description": "Seat",
                "quantity": "1",
                "unit_price": {"amount": "1000.00", "currency": "USD"},
            }
            quote_a = (
                await self._call(
                    "POST", "quote", "/quotes", {"opportunity_id": deal, "lines": [line]}
                )
            )["id"]
            await self.move(deal, "proposal")
            await self._call("POST", "quote", f"/quotes/{quote_a}/present")
            quote_b = (
                await self._call(
                    "POST", "quote", "/quotes", {"opportunity_id": deal, "lines": [line]}
                )
            )["id"]
            await self._call("POST", "quote", f"/quotes/{quote_b}/present")
            await self._call(
                "POST", "quote", f"/quotes/{quote_b}/abandon", {"reason": "customer chose A"}
            )
            await self.move(deal, "negotiation")
            won = self.watcher.expect(deal, quote_a)
            accepted_at = time.perf_counter()
            accept_called_ms = time.time() * 1000
            await self._call("POST", "quote", f"/quotes/{quote_a}/accept")
            seen = await asyncio.wait_for(won, timeout=60)
        except Exception as error:  # a failed deal is counted and reported, not hidden
            self.failures.append(repr(error)[:300])
            return None
        assert seen.won_at is not None
        assert seen.order_at is not None
        self.completed.append(CompletedDeal(deal, quote_a, (quote_b,)))
        return DealResult(
            create_to_won_ms=(seen.won_at - started) * 1000,
            accept_to_won_ms=(seen.won_at - accepted_at) * 1000,
            accept_to_order_ms=(seen.order_at - accepted_at) * 1000,
            create_to_order_ms=(seen.order_at - started) * 1000,
            accept_times=AcceptTimes(deal, accept_called_ms, seen.on_kafka),
        )


async def saturation(
    driver: Driver, deals: int, concurrency: int
) -> tuple[list[DealResult], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(deals):
        queue.put_nowait(n)
    results: list[DealResult] = []

    async def client() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await driver.deal()
            if result:
                results.append(result)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results, time.perf_counter() - started


async def paced(driver: Driver, rate: float, seconds: float) -> tuple[list[DealResult], float]:
    """Open loop: a new deal every 1/rate seconds, whatever the earlier ones are doing."""
    tasks = []
    started = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = n / rate
        if elapsed < due:
            await asyncio.sleep(due - elapsed)
        tasks.append(asyncio.create_task(driver.deal()))
        n += 1
    done = await asyncio.gather(*tasks)
    return [r for r in done if r], n / seconds


STAGE_MOVES = 2000
STAGE_MOVE_CLIENTS = 4


async def stage_move_cost(driver: Driver, opportunity_pids: Sequence[int]) -> dict[str, float]:
    """The opportunity service's CPU per stage move: a few clients move their own deal
    between lead and qualification, back and forth. One kind of request on one process,
    below saturation, so a change to the request path shows without the rest of the deal
    around it. It moves with the machine like every figure here: on a quiet system 1.2 to
    1.4 ms (±5 %), after the half-load phase on a busy machine 1.5 to 1.95 ms."""

    async def moves(deal: str, count: int) -> None:
        for n in range(count):
            await driver.move(deal, "qualification" if n % 2 == 0 else "lead")

    deals = [await driver.open_deal("Stage moves", "10.00") for _ in range(STAGE_MOVE_CLIENTS)]
    await asyncio.gather(*(moves(deal, 50) for deal in deals))  # warm, and an even count
    each = STAGE_MOVES // STAGE_MOVE_CLIENTS

    def spent() -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in opportunity_pids)

    before, started = spent(), time.perf_counter()
    await asyncio.gather(*(moves(deal, each) for deal in deals))
    seconds = time.perf_counter() - started
    done = each * STAGE_MOVE_CLIENTS
    return {
        "moves": done,
        "clients": STAGE_MOVE_CLIENTS,
        "opportunity_cpu_us_per_move": round((spent() - before) * 1e6 / done),
        "moves_per_s": round(done / seconds),
    }


async def commits(admin: asyncpg.Connection) -> int:
    return int(
        await admin.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", BENCH_DATABASE
        )
    )


async def baseline_commit_rate(dsn: str, connections: int, seconds: float = 5.0) -> float:
    """The database's own rate of trivial one-row update commits over `connections`."""
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS public.bench_counter (id int PRIMARY KEY, n bigint)"
    )
    await setup.execute(
        "INSERT INTO public.bench_counter SELECT g, 0 FROM generate_series(1, $1) g "
        "ON CONFLICT DO NOTHING",
        connections,
    )
    await setup.close()
    pool = [await asyncpg.connect(dsn) for _ in range(connections)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(connection: asyncpg.Connection, row: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await connection.execute("UPDATE public.bench_counter SET n = n + 1 WHERE id = $1", row)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, i + 1) for i, c in enumerate(pool)))
    elapsed = time.perf_counter() - started
    for connection in pool:
        await connection.close()
    return done / elapsed


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def failure_reasons(failures: list[str], shown: int = 5) -> list[str]:
    """The commonest reasons deals failed ("count x reason", ids blanked so they group);
    a list, so the medians leave it alone."""
    counted = Counter(_UUID.sub("…", failure)[:200] for failure in failures)
    return [f"{n} x {reason}" for reason, n in counted.most_common(shown)]


DB_COUNTERS = (
    "dealflow_db_statements_total",
    "dealflow_db_commits_total",
    "dealflow_db_transaction_statements_total",
    "dealflow_outbox_relay_batches_total",
)
"""The services' database counters; the third counts BEGIN, COMMIT and ROLLBACK, which
are round trips too but not among the statements; the fourth the relay's reads that
found rows to publish (a statement each, and a produce request)."""
_DB_FIGURES = ("statements", "commits", "transaction_statements", "relay_batches")


async def expositions(
    session: aiohttp.ClientSession, processes: Mapping[str, ServiceProcess]
) -> dict[str, str]:
    """Each process's /metrics text, by replica."""
    texts = {}
    for replica, process in processes.items():
        async with session.get(f"{process.url}/metrics") as response:
            texts[replica] = await response.text()
    return texts


@dataclass
class Counted:
    """The services' own counters at one moment (their /metrics), summed over replicas."""

    database: dict[str, dict[str, float]]
    """By service: the statements and commits it sent."""
    events: dict[str, dict[str, float]]
    """By consumer group: the records it took, by outcome (applied, ignored, ...)."""
    batches: dict[str, float] = field(default_factory=dict)
    """By consumer group: the batches it read (`dealflow_consumer_batches`), a fetch that
    found records each."""
    copies: dict[tuple[str, str], float] = field(default_factory=dict)
    """Changes started from a copy of what the process wrote last, by kind (opportunity,
    quote, deal) and outcome (served, refused), replicas summed (`dealflow_recent_copies`)."""


async def service_counters(
    session: aiohttp.ClientSession, processes: Mapping[str, ServiceProcess]
) -> Counted:
    counted = Counted({}, {})
    for replica, text in (await expositions(session, processes)).items():
        into = counted.database.setdefault(processes[replica].name, {})
        for counter, value in scrape_counters(text, DB_COUNTERS).items():
            into[counter] = into.get(counter, 0.0) + value
        for (group, outcome), value in events_consumed(text).items():
            by_outcome = counted.events.setdefault(group, {})
            by_outcome[outcome] = by_outcome.get(outcome, 0.0) + value
        for group, value in batches_read(text).items():
            counted.batches[group] = counted.batches.get(group, 0.0) + value
        for (kind, outcome), value in copies_counted(text).items():
            counted.copies[kind, outcome] = counted.copies.get((kind, outcome), 0.0) + value
    return counted


def copies_counted(text: str) -> dict[tuple[str, ...], float]:
    """`dealflow_recent_copies` of one exposition by (kind, outcome)."""
    return labelled_by(text, "dealflow_recent_copies", "kind", "outcome")


def copies_per_deal(before: Counted, after: Counted, deals: int) -> dict[str, dict[str, float]]:
    """By kind, changes per deal that skipped their read with a copy (served), and those
    whose copy was out of date (refused: the write or a rule refused it, and it read)."""
    by_kind: dict[str, dict[str, float]] = {}
    for (kind, outcome), value in sorted(after.copies.items()):
        spent = value - before.copies.get((kind, outcome), 0.0)
        by_kind.setdefault(kind, {})[outcome] = round(spent / max(1, deals), 2)
    return by_kind


def events_consumed(text: str) -> dict[tuple[str, ...], float]:
    """`dealflow_events_consumed` of one exposition by (group, outcome), types summed."""
    return labelled_by(text, "dealflow_events_consumed", "group", "outcome")


def batches_read(text: str) -> dict[str, float]:
    """`dealflow_consumer_batches` of one exposition by group."""
    return {
        group: value
        for (group,), value in labelled_by(text, "dealflow_consumer_batches", "group").items()
    }


def events_per_deal(before: Counted, after: Counted, deals: int) -> dict[str, dict[str, float]]:
    """Records each consumer group took per deal, by outcome, with their sum: a record
    `ignored` was fetched and skipped unparsed (its type is not the group's). And the
    batches they came in: records a batch is what each fetch, transaction and inbox
    insert is shared by."""
    figures: dict[str, dict[str, float]] = {}
    for group, outcomes in sorted(after.events.items()):
        earlier = before.events.get(group, {})
        spent = {o: n - earlier.get(o, 0.0) for o, n in outcomes.items()}
        figures[group] = {o: round(n / max(1, deals), 1) for o, n in sorted(spent.items()) if n}
        figures[group]["records"] = round(sum(spent.values()) / max(1, deals), 1)
        batches = after.batches.get(group, 0.0) - before.batches.get(group, 0.0)
        figures[group]["batches"] = round(batches / max(1, deals), 2)
    figures["total"] = {
        "records": round(sum(f["records"] for f in figures.values()), 1),
        "applied": round(sum(f.get("applied", 0.0) for f in figures.values()), 1),
        "batches": round(sum(f["batches"] for f in figures.values()), 2),
    }
    return figures


async def check_invariants(
    db: asyncpg.Connection,
    session: aiohttp.ClientSession,
    processes: Mapping[str, ServiceProcess],
    offsets: OffsetsReader,
    deals: list[CompletedDeal],
) -> dict[str, Any]:
    """Waits (up to DRAIN_SECONDS) for the outboxes to empty and every consumer group to
    reach the ends of its partitions, then judges what is there."""
    seen = Observed()
    schemas = await outbox_schemas(db)
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        seen.unsent = await unsent(db, schemas)
        from_metrics((await expositions(session, processes)).values(), seen)
        await offsets.read(seen.reported_lag, seen)
        drained = not any([*seen.unsent.values(), *seen.lag.values(), *seen.reported_lag.values()])
        if drained or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    await from_database(db, deals, seen)
    return summary(deals, seen, violations(deals, seen))


def per_deal(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], deals: int
) -> dict[str, dict[str, float]]:
    """Each database counter per deal, by service and in total, and the round trips:
    the statements with the BEGIN, COMMIT and ROLLBACK sent around them."""
    figures: dict[str, dict[str, float]] = {key: {} for key in (*_DB_FIGURES, "round_trips")}
    for name in after:
        spent = {
            key: after[name].get(counter, 0.0) - before.get(name, {}).get(counter, 0.0)
            for counter, key in zip(DB_COUNTERS, _DB_FIGURES, strict=True)
        }
        for key, value in spent.items():
            figures[key][name] = round(value / max(1, deals), 1)
        trips = spent["statements"] + spent["transaction_statements"]
        figures["round_trips"][name] = round(trips / max(1, deals), 1)
    for by_service in figures.values():
        by_service["total"] = round(sum(by_service.values()), 1)
    return figures


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


CONCURRENCY = 48
"""Clients of the saturation run. A closed loop keeps the machine busy only if enough deals
are in flight to cover each deal's waits (Little's law): ten calls in turn and the saga's
four hops, each a fetch that Tansu holds its whole wait. At 32 clients the machine was
79-86 % busy with 84-85 deals/s, at 48 88-89 % with 92-93, at 64 89-91 % with 93-94 and
a third more latency (5 December 2026, docs/performance.md, twenty-third round)."""
POOL_SIZE_DEFAULT: int = ServiceSettings.model_fields["database_pool_size"].default
"""What one replica of each service runs with."""
CONNECTIONS_RESERVED = 10
"""Connections the bench keeps for itself beside its baseline's (admin, invariants)."""
BASELINE_CONNECTIONS = 32
"""Connections of the baseline's commit rate: as many as the clients were by default until
the twenty-third round, and fixed, so that a run with more clients does not ask, after
its saturation run, for more connections than the services' pools have left on the
server ("too many clients"), and the ratio stays comparable with earlier reports."""


async def pool_size_within(
    admin: asyncpg.Connection, args: argparse.Namespace, services: Mapping[str, Any]
) -> int | None:
    """A pool size for each process when replicas would take more connections than the
    server has (`max_connections`, less the baseline's and the bench's own); None keeps
    the default. Pools keep what they open, so twelve processes of 20 outgrew the 100
    connections of a default PostgreSQL: the baseline after the saturation run found
    none left ("too many clients")."""
    if args.replicas == 1:
        return None
    limit = int(await admin.fetchval("SHOW max_connections"))
    processes = args.replicas * sum(1 for c in services.values() if owns_database(c))
    budget = limit - BASELINE_CONNECTIONS - CONNECTIONS_RESERVED
    if processes * POOL_SIZE_DEFAULT <= budget:
        return None
    return max(2, budget // processes)


@dataclass
class System:
    """What one run on a fresh system measured, and what the report says of the system."""

    run: dict[str, Any]
    invariants: dict[str, Any]
    services: list[str]
    replicated: list[str]
    peak_memory_mb: dict[str, float | None]
    postgres: str


async def _one_system(args: argparse.Namespace, log_dir: Path, run: int) -> System:
    """Start everything afresh (database, broker, services), warm up, measure one run,
    check the invariants, stop everything.

    A fresh system per run: the embedded broker keeps every record in memory, and its
    cost per fetch grows with its log (its CPU per deal rose from 13 to 24 to 28 ms over
    three runs on one system), so later runs measured the broker's history, not the
    code. Apache Kafka's fetch cost does not grow so.
    """
    server = make_url(args.database_url)

    def dsn_of(database: str) -> str:
        return str(server.set(drivername="postgresql", database=database))

    # Before anything of ours runs: how fast the host is this minute, in Python and in
    # what crosses the kernel to another process.
    reference = reference_cpu_ms()
    round_trip = reference_round_trip_us()
    admin = await asyncpg.connect(dsn_of("postgres"))
    await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    bench_url = str(server.set(drivername="postgresql+asyncpg", database=BENCH_DATABASE))

    broker = EmbeddedBroker("127.0.0.1", free_port(), log_dir / "broker.log")
    broker.start()
    services = installed_services()
    secrets = {name: uuid.uuid4().hex * 2 for name in secret_names(services)}
    pool_size = await pool_size_within(admin, args, services)
    pooled = {"DEALFLOW_DATABASE_POOL_SIZE": str(pool_size)} if pool_size else {}
    processes: dict[str, ServiceProcess] = {}
    """By replica name; each process's `name` is its service."""
    for name, settings_class in services.items():
        # The console has no schema, no consumer group and no part in a deal: one is enough.
        count = args.replicas if owns_database(settings_class) else 1
        for number in range(1, count + 1):
            replica = replica_name(name, number, count)
            processes[replica] = bench_service(
                name,
                settings_class,
                bootstrap_servers=broker.bootstrap_servers,
                database_url=bench_url,
                secrets=secrets,
                log_file=log_dir / f"{replica}.log",
                # A group spreads a topic's partitions over its members: a member beyond
                # the partition count would get none.
                env={"DEALFLOW_KAFKA_TOPIC_PARTITIONS": str(args.partitions), **pooled},
            )
    service_of = {replica: process.name for replica, process in processes.items()}
    replicated = sorted(replica for replica, service in service_of.items() if replica != service)
    watcher = WonWatcher(broker.bootstrap_servers)
    offsets = OffsetsReader(broker.bootstrap_servers, args.partitions)
    try:
        for process in processes.values():
            await process.start()
        for process in processes.values():
            await process.wait_ready(timeout=120)
        await watcher.start()
        await offsets.start()
        token = mint_token(
            secrets["DEALFLOW_JWT_SECRET"],
            sub="bench",
            roles=["rep", "manager"],
            teams=["bench"],
            now=int(time.time()),
        )
        authorization = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with (
            aiohttp.ClientSession(
                connector=connector,
                headers=authorization,
                timeout=aiohttp.ClientTimeout(total=60),
            ) as session,
            # The deals' own calls; the session reads metrics and checks invariants.
            JsonClient(authorization, timeout=60) as deal_calls,
        ):
            urls: dict[str, list[str]] = {}
            for process in processes.values():
                urls.setdefault(process.name, []).append(process.url)
            driver = Driver(deal_calls, RoundRobin(urls), watcher)
            await saturation(driver, args.warmup, args.concurrency)
            driver.failures.clear()
            print(f"run {run}/{args.runs}: saturation", file=sys.stderr, flush=True)
            pids = {n: p.process.pid for n, p in processes.items() if p.process}
            pids["broker"] = broker.pid
            # The wait for the statistics doubles as the idle window: what the system
            # costs with no deal in flight (polls, heartbeats, relays, schedulers). Not
            # a share of the saturation window's figures: under load the saga
            # consumers' polls become fetches that find records (1 to 3 per deal).
            await asyncio.sleep(IDLE_SETTLE_SECONDS)
            idle_sampler = CpuSampler(admin, pids, BENCH_DATABASE)
            await idle_sampler.start()
            await asyncio.sleep(STATS_SETTLE_SECONDS - IDLE_SETTLE_SECONDS)
            idle_by_replica = await idle_sampler.stop()
            idle_cpu_ms_per_s = {
                name: round(seconds * 1000 / idle_sampler.seconds, 1)
                for name, seconds in by_service(idle_by_replica, service_of).items()
            }
            idle_cpu_ms_per_s["total"] = round(sum(idle_cpu_ms_per_s.values()), 1)
            idle_cpu_ms_per_s["machine"] = round(
                idle_sampler.machine_busy * 1000 / idle_sampler.seconds, 1
            )
            before = await commits(admin)
            counted_before = await service_counters(session, processes)
            sampler = CpuSampler(admin, pids, BENCH_DATABASE, alone={LOAD_CLIENT: os.getpid()})
            await sampler.start()
            results, elapsed = await saturation(driver, args.deals, args.concurrency)
            by_replica = await sampler.stop()
            cpu = by_service(by_replica, service_of)
            counted_after = await service_counters(session, processes)
            counted = per_deal(counted_before.database, counted_after.database, len(results))
            consumed = events_per_deal(counted_before, counted_after, len(results))
            copied = copies_per_deal(counted_before, counted_after, len(results))
            failed_saturation = len(driver.failures)
            saturation_reasons = failure_reasons(driver.failures)
            done = max(1, len(results))
            cpu_ms_per_deal = {
                name: round(seconds * 1000 / done, 2) for name, seconds in cpu.items()
            }
            cpu_ms_per_deal["total"] = round(sum(cpu.values()) * 1000 / done, 2)
            kernel = by_service(sampler.kernel_seconds, service_of)
            kernel_percent = {
                name: round(kernel.get(name, 0.0) / seconds * 100, 1)
                for name, seconds in cpu.items()
                if seconds > 0
            }
            replica_cpu = {
                name: round(by_replica.get(name, 0.0) * 1000 / done, 2) for name in replicated
            }
            await asyncio.sleep(STATS_SETTLE_SECONDS)
            after = await commits(admin)
            await asyncio.sleep(STATS_SETTLE_SECONDS)
            idle_rate = (await commits(admin) - after) / STATS_SETTLE_SECONDS
            ours = max(0.0, after - before - idle_rate * STATS_SETTLE_SECONDS)
            print(f"run {run}/{args.runs}: baseline", file=sys.stderr, flush=True)
            baseline = await baseline_commit_rate(dsn_of(BENCH_DATABASE), BASELINE_CONNECTIONS)
            throughput = len(results) / elapsed
            half_rate = args.half_load_rate or max(1.0, throughput / 2)
            print(
                f"run {run}/{args.runs}: half load at {half_rate:.1f} deals/s",
                file=sys.stderr,
                flush=True,
            )
            driver.failures.clear()
            # What the half load cost, process by process: half of the saturation rate
            # was found to keep the machine 83-97 % busy, not half (docs/performance.md,
            # issue 13's twenty-ninth round), and its latency is queueing for the CPU.
            half_counted_before = await service_counters(session, processes)
            half_sampler = CpuSampler(admin, pids, BENCH_DATABASE, alone={LOAD_CLIENT: os.getpid()})
            await half_sampler.start()
            paced_results, achieved = await paced(driver, half_rate, args.half_load_seconds)
            half_cpu = by_service(await half_sampler.stop(), service_of)
            half_counted_after = await service_counters(session, processes)
            half_done = max(1, len(paced_results))
            half_consumed = events_per_deal(half_counted_before, half_counted_after, half_done)
            half_counted = per_deal(
                half_counted_before.database, half_counted_after.database, half_done
            )
            half_cpu_ms_per_deal = {
                name: round(seconds * 1000 / half_done, 2) for name, seconds in half_cpu.items()
            }
            half_cpu_ms_per_deal["total"] = round(sum(half_cpu.values()) * 1000 / half_done, 2)
            half_load_failures = list(driver.failures)
            print(f"run {run}/{args.runs}: stage moves", file=sys.stderr, flush=True)
            stage_moves = await stage_move_cost(
                driver,
                [
                    p.process.pid
                    for p in processes.values()
                    if p.name == "opportunity" and p.process
                ],
            )
            measured: dict[str, Any] = {
                "database_pool_size": pool_size or POOL_SIZE_DEFAULT,
                # A fixed piece of work's CPU ms in the bench's process before the run
                # (`reference_cpu_ms`): set a run's CPU per deal beside it.
                "machine_reference_cpu_ms": reference,
                # And of a loopback round trip to another process, both sides
                # (`reference_round_trip_us`): the kind of work that slows most.
                "machine_reference_round_trip_us": round_trip,
                "failure_reasons": {
                    "saturation": saturation_reasons,
                    "half_load": failure_reasons(half_load_failures),
                },
                "saturation": {
                    "deals": args.deals,
                    "completed": len(results),
                    "failed": failed_saturation,
                    "seconds": round(elapsed, 2),
                    "deals_per_s": round(throughput, 1),
                    "create_to_won_ms": percentiles([r.create_to_won_ms for r in results]),
                    "accept_to_won_ms": percentiles([r.accept_to_won_ms for r in results]),
                    "accept_to_order_ms": percentiles([r.accept_to_order_ms for r in results]),
                    "create_to_order_ms": percentiles([r.create_to_order_ms for r in results]),
                    "http_calls_per_deal": HTTP_CALLS_PER_DEAL,
                    "db_commits_per_deal": round(ours / max(1, len(results)), 1),
                    "db_commits_per_s": round(ours / elapsed, 1),
                    # From /proc over the saturation window; PostgreSQL's
                    # backends are grouped by the service they serve.
                    "cpu_ms_per_deal": cpu_ms_per_deal,
                    "cpu_per_deal_in_load_client_units": in_load_client_units(cpu_ms_per_deal),
                    **({"cpu_ms_per_deal_by_replica": replica_cpu} if replica_cpu else {}),
                    # Of each process's CPU, the share spent in the kernel: about a
                    # tenth for the services, so the Python they run is the rest.
                    "cpu_kernel_percent": kernel_percent,
                    "machine_busy_ms_per_deal": round(sampler.machine_busy * 1000 / done, 2),
                    "machine_context_switches_per_deal": round(sampler.context_switches / done),
                    "machine_busy_percent": round(
                        sampler.machine_busy / sampler.seconds / (os.cpu_count() or 1) * 100,
                        1,
                    ),
                    # The services' own counters (dealflow_db_statements_total).
                    "db_statements_per_deal": counted["statements"],
                    "db_commits_per_deal_by_service": counted["commits"],
                    # Statements with the BEGIN, COMMIT and ROLLBACK around them.
                    "db_round_trips_per_deal": counted["round_trips"],
                    # Outbox batches published (dealflow_outbox_relay_batches_total).
                    "relay_batches_per_deal": counted["relay_batches"],
                    # The consumers' own counters (dealflow_events_consumed).
                    "events_per_deal_by_group": consumed,
                    # Changes started from a copy (dealflow_recent_copies), by kind and outcome.
                    "recent_copies_per_deal": copied,
                },
                # CPU ms per second of each process with no deal in flight, before the
                # saturation window; "machine" counts every process on the machine.
                "idle_cpu_ms_per_s": idle_cpu_ms_per_s,
                "stage_moves": stage_moves,
                "baseline_one_row_update": {
                    "connections": BASELINE_CONNECTIONS,
                    "commits_per_s": round(baseline, 1),
                },
                "db_commit_rate_ratio": round(ours / elapsed / baseline, 3),
                "half_load": {
                    "target_deals_per_s": round(half_rate, 1),
                    "started_deals_per_s": round(achieved, 1),
                    "machine_busy_percent": round(
                        half_sampler.machine_busy
                        / half_sampler.seconds
                        / (os.cpu_count() or 1)
                        * 100,
                        1,
                    ),
                    "cpu_ms_per_deal": half_cpu_ms_per_deal,
                    "machine_context_switches_per_deal": round(
                        half_sampler.context_switches / half_done
                    ),
                    # As at saturation: the consumer batches, round trips and relay
                    # batches a deal took. Here more, as each carries fewer deals
                    # (docs/performance.md, issue 13's thirtieth round).
                    "events_per_deal_by_group": half_consumed,
                    "db_round_trips_per_deal": half_counted["round_trips"],
                    "relay_batches_per_deal": half_counted["relay_batches"],
                    "completed": len(paced_results),
                    "failed": len(half_load_failures),
                    "accept_to_won_ms": percentiles([r.accept_to_won_ms for r in paced_results]),
                    "accept_to_order_ms": percentiles(
                        [r.accept_to_order_ms for r in paced_results]
                    ),
                    "create_to_won_ms": percentiles([r.create_to_won_ms for r in paced_results]),
                },
            }
            driver.failures.clear()
            print("invariants: draining, then checking", file=sys.stderr, flush=True)
            bench_db = await asyncpg.connect(dsn_of(BENCH_DATABASE))
            try:
                # Where the half load's accept-to-won time went, part by part.
                measured["half_load"]["accept_to_won_parts"] = await accept_to_won_parts(
                    bench_db, [r.accept_times for r in paced_results]
                )
                invariants = await check_invariants(
                    bench_db, session, processes, offsets, driver.completed
                )
            finally:
                await bench_db.close()
        system = System(
            run=measured,
            invariants=invariants,
            services=sorted(set(service_of.values())),
            replicated=replicated,
            peak_memory_mb={
                **{name: peak_rss_mb(p.process.pid) for name, p in processes.items() if p.process},
                "broker": peak_rss_mb(broker.pid),
            },
            postgres=str(await admin.fetchval("SHOW server_version")),
        )
    finally:
        await offsets.stop()
        await watcher.stop()
        await asyncio.gather(*(p.stop() for p in processes.values()), return_exceptions=True)
        broker.stop()
        await admin.close()
    return system


async def main(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    systems = [await _one_system(args, log_dir, run) for run in range(1, args.runs + 1)]
    runs = [system.run for system in systems]
    last = systems[-1]
    median = _medians(runs)
    checked = [system.invariants for system in systems]
    invariants = {
        "holds": all(c["holds"] for c in checked),
        "deals_checked": sum(c["deals_checked"] for c in checked),
        "violations": sum(c["violations"] for c in checked),
        "first_violations": [v for c in checked for v in c["first_violations"]][:10],
        "outbox_unsent": {
            name: sum(c["outbox_unsent"].get(name, 0) for c in checked)
            for name in checked[-1]["outbox_unsent"]
        },
        "dead_letters": sum(c["dead_letters"] for c in checked),
        "consumer_groups": checked[-1]["consumer_groups"],
        "consumer_lag": sum(c["consumer_lag"] for c in checked),
        "duplicates_skipped_by_inboxes": sum(c["duplicates_skipped_by_inboxes"] for c in checked),
        "by_run": checked,
    }
    report: dict[str, Any] = {
        "benchmark": "deals",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": host_platform.python_version(),
            "postgres": last.postgres,
            "broker": "Tansu (embedded, memory storage), started afresh for every run",
        },
        "config": {
            "deals": args.deals,
            "concurrency": args.concurrency,
            "runs": args.runs,
            "warmup_deals": args.warmup,
            "half_load_seconds": args.half_load_seconds,
            # None: half the rate the saturation run measured.
            "half_load_rate": args.half_load_rate,
            "replicas": args.replicas,
            "topic_partitions": args.partitions,
        },
        "median": median,
        # This run's figures, to set beside the same command run with another count.
        "replicas": {
            "per_service": args.replicas,
            "topic_partitions": args.partitions,
            "deals_per_s": median["saturation.deals_per_s"],
            "cpu_ms_per_deal": {
                name: median[f"saturation.cpu_ms_per_deal.{name}"]
                for name in [*last.services, "total"]
            },
            **(
                {
                    "cpu_ms_per_deal_by_replica": {
                        name: median[f"saturation.cpu_ms_per_deal_by_replica.{name}"]
                        for name in last.replicated
                    }
                }
                if last.replicated
                else {}
            ),
        },
        "invariants": invariants,
        "runs": runs,
        "peak_memory_mb": {
            name: max((s.peak_memory_mb.get(name) or 0.0) for s in systems)
            for name in last.peak_memory_mb
        },
    }
    report["target"] = {
        "deals_per_s": 100,
        "accept_to_won_p99_ms_at_half_load": 250,
        "met": bool(
            median["saturation.deals_per_s"] >= 100
            and (median["half_load.accept_to_won_ms.p99"] or 1e9) < 250
        ),
    }
    return report


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, into)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        into[prefix] = value


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for run in runs:
        values: dict[str, Any] = {}
        _flatten("", run, values)
        flat.append(values)
    return {key: round(statistics.median(v[key] for v in flat if key in v), 2) for key in flat[0]}


def cli() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=600, help="deals per saturation run")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="concurrent clients")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=60, help="deals before measuring")
    parser.add_argument("--half-load-seconds", type=float, default=20.0)
    parser.add_argument(
        "--half-load-rate",
        type=float,
        help="deals/s of the latency phase instead of half the measured throughput: "
        "two builds compared at the same load (a faster build otherwise gets a higher rate)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server; the benchmark creates and uses database dealflow_bench",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="processes of each service with a schema, sharing it and its consumer groups",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        help=f"partitions of every topic (default {DEFAULT_PARTITIONS}, or --replicas if more)",
    )
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas: at least 1")
    if args.partitions is None:
        args.partitions = max(DEFAULT_PARTITIONS, args.replicas)
    elif args.partitions < args.replicas:
        parser.error("--partitions: at least --replicas, or a replica reads nothing")
    log_dir = Path("bench/results/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    # On uvloop, as the services: the load client's CPU counts in the figures too.
    tolerate_closed_connections()
    report = uvloop.run(main(args, log_dir))
    written = keep_report(report, "deals")
    figures = {
        "saturation.deals_per_s": "deals/s",
        "half_load.accept_to_won_ms.p99": "accept-to-won p99 at half load (ms)",
        "saturation.cpu_ms_per_deal.total": "CPU ms per deal, every process",
        "saturation.cpu_per_deal_in_load_client_units": "CPU per deal, in load-client units",
        "saturation.db_statements_per_deal.total": "statements per deal",
        "saturation.db_round_trips_per_deal.total": "database round trips per deal",
        "saturation.db_commits_per_deal_by_service.total": "commits per deal",
        "saturation.events_per_deal_by_group.total.records": "records consumed per deal",
        "saturation.events_per_deal_by_group.total.applied": "records applied per deal",
        "idle_cpu_ms_per_s.total": "idle CPU ms per second, our processes",
        "stage_moves.opportunity_cpu_us_per_move": "opportunity CPU µs per stage move",
        "machine_reference_cpu_ms": "host speed: reference work, CPU ms",
        "machine_reference_round_trip_us": "host speed: loopback round trip, CPU µs",
    }
    figures.update(
        {
            f"saturation.cpu_ms_per_deal.{name}": f"CPU ms per deal: {name}"
            for name in sorted(report["runs"][0]["saturation"]["cpu_ms_per_deal"])
            if name != "total"
        }
    )
    figures.update(
        {
            f"half_load.accept_to_won_parts.ms.{name}.mean": f"half load: {name}, mean ms"
            for name, _ in PARTS
        }
    )
    for line in compare_with_previous(RESULTS, written, "deals-*.json", figures):
        print(line, file=sys.stderr)
    invariants = report["invariants"]
    if not invariants["holds"]:
        shown = "; ".join(invariants["first_violations"][:5])
        raise SystemExit(f"invariants violated ({invariants['violations']}): {shown}")


if __name__ == "__main__":
    cli()
