"""`make bench-sequences`: the follow-up scheduler benchmark. Not a test: it measures and
prints a JSON report.

Starts the embedded stack (Tansu and every service as its own process, as `make bench`
does) on a fresh PostgreSQL database, then:

1. a template, through the real path: a sequence (trigger: entering proposal; one
   `task` step) defined over the sequence service's API, and a deal created and moved
   into proposal over the opportunity service's API; the bench waits until the sequence
   service has enrolled it and every service has applied its events;
2. seeding, per run: N clones of the template written straight into every service's
   tables with COPY (every row that mentions the deal or an id it owns: the deal, its
   owners and history, each service's projection of it, its enrollment, its event
   sequence counters; the sequence itself is shared), each with fresh ids, so every
   service holds what the real events would have left. In the same transaction the
   clones' next due times are set on the real clock, spread uniformly at random over
   S seconds starting LEAD seconds after the commit (the service runs its scheduler on
   the real clock); seeding is timed apart;
3. the run: the sequence service's own scheduler (tick, batches) runs the steps as they
   fall due. By default (`--services sequence`) the other services are stopped after
   the template, so the figures are the scheduler's own (with its outbox relay and the
   broker); with `--services all` every other service reacts as it would, on the same
   cores (the opportunity service follows each task.created to the deal's next action
   and publishes opportunity.updated, which the others apply). The bench counts
   task.created on dealflow.sequence.events, and samples from /proc the CPU time of
   every running process and of the bench database's PostgreSQL backends (by
   application name);
4. figures, from the service's own records: each step's delay is `executed_at - due_at`
   of `enrollment_steps` (`executed_at` is the clock read when its batch started),
   next to the delay until its batch committed (the outbox rows' `created_at`, stamped
   at commit) and until its task.created was published (the Kafka record's timestamp);
   checks: every step ran exactly once (one step row, one task, one task.created in the
   outbox and on Kafka per enrollment, every enrollment completed).

    make bench-sequences                                        # 10,000 enrollments, 60 s
    make bench-sequences BENCH_ARGS="--enrollments 1000 --runs 3"
    make bench-sequences BENCH_ARGS="--services all"            # the whole system reacting
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform as host_platform
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from bench.deals import peak_rss_mb
from bench.measure import CpuSampler, bench_service, keep_report, medians
from bench.purge import Table, tables_of
from dealflow_common.auth import mint_token
from dealflow_common.contracts.topics import SEQUENCE_EVENTS
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.embedded import secret_names
from dealflow_common.runtime.processes import ServiceProcess, installed_services, owns_database

BENCH_DATABASE = "dealflow_bench_sequences"
APPLICATION_NAME = "bench-sequences"
# Event history, not state: a clone has no past events to publish or to skip again.
# Ids a clone refers to without owning them: every clone runs the template's sequence.
SHARED_ID_COLUMNS = frozenset({"sequence_id"})
# The template's own step falls due long after the bench (its clones' due times are set).
TEMPLATE_STEP_AFTER = "P1D"
TARGET_P99_DELAY_MS = 2000.0
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 1)}


# 1. The template, through the real path.


@dataclass
class Api:
    session: aiohttp.ClientSession
    urls: dict[str, str]
    manager: dict[str, str]
    rep: dict[str, str]

    async def call(self, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
        async with self.session.request(method, url, json=body, headers=headers) as response:
            text = await response.read()
            payload = orjson.loads(text) if text else None
            if response.status >= 300:
                raise RuntimeError(f"{method} {url} -> {response.status}: {payload}")
            return payload


async def template(api: Api) -> tuple[uuid.UUID, uuid.UUID]:
    """The sequence, and a deal it enrolled: (sequence id, deal id)."""
    sequence = await api.call(
        "POST",
        f"{api.urls['sequence']}/sequences",
        {
            "name": "Proposal follow-up (bench)",
            "trigger": {"event": "opportunity.stage_changed", "stage": "proposal"},
            "steps": [
                {"after": TEMPLATE_STEP_AFTER, "action": "task", "title": "Call about the offer"}
            ],
        },
        api.manager,
    )
    deal = await api.call(
        "POST",
        f"{api.urls['opportunity']}/opportunities",
        {
            "title": "Sequence bench deal",
            "customer": {"kind": "organization", "id": "bench", "name": "Bench Corp"},
            "value": {"amount": "1000.00", "currency": "USD"},
        },
        api.rep,
    )
    for stage in ("qualification", "proposal"):
        await api.call(
            "POST",
            f"{api.urls['opportunity']}/opportunities/{deal['id']}/stage",
            {"stage": stage},
            api.rep,
        )
    return uuid.UUID(sequence["id"]), uuid.UUID(deal["id"])


async def unsent(db: asyncpg.Connection, schemas: Iterable[str]) -> int:
    return sum(
        [
            int(await db.fetchval(f'SELECT count(*) FROM "{s}".outbox WHERE sent_at IS NULL'))
            for s in schemas
        ]
    )


async def template_settled(db: asyncpg.Connection, deal: uuid.UUID, schemas: list[str]) -> bool:
    """Enrolled, its owner known to the sequence service, every outbox sent."""
    enrolled = await db.fetchval(
        "SELECT count(*) FROM sequence.enrollments WHERE opportunity_id = $1 AND state = 'active'",
        deal,
    )
    known = await db.fetchval(
        "SELECT count(*) FROM sequence.known_deals WHERE id = $1 AND stage = 'proposal' "
        "AND jsonb_array_length(owners) > 0",
        deal,
    )
    return enrolled == 1 and known == 1 and await unsent(db, schemas) == 0


async def wait_settled(db: asyncpg.Connection, deal: uuid.UUID, schemas: list[str]) -> None:
    """Settled twice, 1.5 s apart (late consumers of events nobody waits for)."""
    deadline = time.perf_counter() + 60
    settled_since: float | None = None
    while settled_since is None or time.perf_counter() - settled_since < 1.5:
        if time.perf_counter() > deadline:
            raise RuntimeError("the template's events were not all applied in 60 s")
        if await template_settled(db, deal, schemas):
            settled_since = settled_since or time.perf_counter()
        else:
            settled_since = None
        await asyncio.sleep(0.2)


# 2. Seeding: clones of the template's rows in every service's tables.


@dataclass
class Template:
    deal: uuid.UUID
    rows: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)
    owned: set[uuid.UUID] = field(default_factory=set)
    enrollment: uuid.UUID | None = None


async def capture(db: asyncpg.Connection, tables: list[Table], template: Template) -> None:
    """Every row of every table that mentions the template's deal or an id it owns."""
    template.owned = {template.deal}
    while True:
        pattern = "|".join(str(u) for u in template.owned)
        template.rows = {}
        owned = set(template.owned)
        for table in tables:
            cols = ", ".join(f'"{c}"' for c in table.columns)
            rows = await db.fetch(
                f'SELECT {cols} FROM "{table.schema}"."{table.name}" t WHERE t::text ~ $1',
                pattern,
            )
            if rows:
                template.rows[(table.schema, table.name)] = [tuple(r) for r in rows]
            for r in rows:
                for column in table.uuid_columns:
                    if column not in SHARED_ID_COLUMNS and r[column] is not None:
                        owned.add(r[column])
        if owned == template.owned:
            break
        template.owned = owned
    (enrollment,) = template.rows[("sequence", "enrollments")]
    template.enrollment = enrollment[0]


def _cloner(template: Template) -> Any:
    """Fresh ids for every id the template owns, and the function that swaps them in."""
    mapping = {u: uuid.uuid4() for u in template.owned}
    as_text = {str(old): str(new) for old, new in mapping.items()}

    def value(v: Any) -> Any:
        if isinstance(v, uuid.UUID):
            return mapping.get(v, v)
        if isinstance(v, str) and UUID_TEXT.search(v):
            return UUID_TEXT.sub(lambda m: as_text.get(m.group(0), m.group(0)), v)
        return v

    return mapping, value


@dataclass
class Seed:
    deals: list[uuid.UUID]
    enrollments: list[uuid.UUID]
    rows: int
    copy_seconds: float
    first_due: datetime
    committed_at: datetime


async def seed(
    db: asyncpg.Connection,
    tables: list[Table],
    template: Template,
    count: int,
    spread: float,
    lead: float,
    rng: random.Random,
) -> Seed:
    """`count` clones of the template with COPY, in one transaction that ends by setting
    their enrollments' next due times: `lead` seconds after now, plus a uniform random
    offset within `spread` seconds."""
    started = time.perf_counter()
    records: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    deals, enrollments = [], []
    for _ in range(count):
        mapping, value = _cloner(template)
        deals.append(mapping[template.deal])
        assert template.enrollment is not None
        enrollments.append(mapping[template.enrollment])
        for key, rows in template.rows.items():
            into = records.setdefault(key, [])
            into.extend(tuple(value(v) for v in row) for row in rows)
    offsets = [rng.uniform(0.0, spread) for _ in range(count)]
    written = 0
    async with db.transaction():
        for table in tables:
            key = (table.schema, table.name)
            if key in records:
                await db.copy_records_to_table(
                    table.name,
                    schema_name=table.schema,
                    columns=table.columns,
                    records=records[key],
                )
                written += len(records[key])
        for schema, name in records:
            await db.execute(f'ANALYZE "{schema}"."{name}"')
        first_due = datetime.now(UTC) + timedelta(seconds=lead)
        await db.execute(
            "UPDATE sequence.enrollments e "
            "SET next_due_at = $1::timestamptz + o.offset_s * interval '1 second' "
            "FROM unnest($2::uuid[], $3::float8[]) AS o(id, offset_s) WHERE e.id = o.id",
            first_due,
            enrollments,
            offsets,
        )
    committed_at = datetime.now(UTC)
    return Seed(deals, enrollments, written, time.perf_counter() - started, first_due, committed_at)


# 3. The run: task.created on Kafka, CPU time of every process.


class TaskWatcher:
    """Sees the sequence service's events about the seeded deals arrive on Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            SEQUENCE_EVENTS,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.deals: set[str] = set()
        self.task_created: dict[str, list[tuple[str, int]]] = {}
        """deal -> (task id, record timestamp in ms) of each task.created seen."""
        self.types: Counter[str] = Counter()
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

    def watch(self, deals: Iterable[uuid.UUID]) -> None:
        self.deals = {str(d) for d in deals}
        self.task_created = {}
        self.types = Counter()

    @property
    def tasks_seen(self) -> int:
        return len(self.task_created)

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event["subject"] not in self.deals:
                        continue
                    self.types[event["type"]] += 1
                    if event["type"] == "task.created":
                        self.task_created.setdefault(event["subject"], []).append(
                            (event["data"]["task_id"], record.timestamp)
                        )


async def steps_done(db: asyncpg.Connection, enrollments: list[uuid.UUID]) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM sequence.enrollment_steps WHERE enrollment_id = ANY($1)",
            enrollments,
        )
    )


async def deal_tasks_known(db: asyncpg.Connection, deals: list[uuid.UUID]) -> int:
    """Tasks of the seeded deals the opportunity service has followed (next action)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM opportunity.deal_tasks WHERE opportunity_id = ANY($1)", deals
        )
    )


async def until_done(
    db: asyncpg.Connection,
    watcher: TaskWatcher,
    seeded: Seed,
    schemas: list[str],
    downstream: bool,
    max_seconds: float,
) -> tuple[bool, float]:
    """Until every step ran, its task.created reached Kafka and (with every service up) the
    opportunity service has followed every task and every outbox is sent: (done, seconds
    from the first due time)."""
    n = len(seeded.enrollments)
    last_report = time.perf_counter()
    deadline = time.perf_counter() + max_seconds
    while True:
        ran = await steps_done(db, seeded.enrollments)
        followed = await deal_tasks_known(db, seeded.deals) if downstream else n
        done = ran == n and watcher.tasks_seen == n and followed == n
        if done and await unsent(db, schemas) == 0:
            return True, (datetime.now(UTC) - seeded.first_due).total_seconds()
        if time.perf_counter() > deadline:
            return False, (datetime.now(UTC) - seeded.first_due).total_seconds()
        if time.perf_counter() - last_report > 5:
            last_report = time.perf_counter()
            due = (datetime.now(UTC) - seeded.first_due).total_seconds()
            log(
                f"  {due:6.1f}s after the first due time: {ran} steps ran, "
                f"{watcher.tasks_seen} task.created on Kafka"
                + (f", {followed} followed by the opportunity service" if downstream else "")
            )
        await asyncio.sleep(0.5)


# 4. Figures and checks, from the service's own records.


async def figures(
    db: asyncpg.Connection, watcher: TaskWatcher, seeded: Seed
) -> tuple[dict[str, Any], dict[str, Any]]:
    steps = await db.fetch(
        "SELECT s.enrollment_id, e.opportunity_id, e.state, s.due_at, s.executed_at, s.task_id "
        "FROM sequence.enrollment_steps s JOIN sequence.enrollments e ON e.id = s.enrollment_id "
        "WHERE s.enrollment_id = ANY($1)",
        seeded.enrollments,
    )
    outbox = await db.fetch(
        "SELECT subject, created_at FROM sequence.outbox "
        "WHERE event_type = 'task.created' AND subject = ANY($1)",
        [str(d) for d in seeded.deals],
    )
    tasks = await db.fetch(
        "SELECT enrollment_id, count(*) AS n FROM sequence.tasks WHERE enrollment_id = ANY($1) "
        "GROUP BY enrollment_id",
        seeded.enrollments,
    )
    states = Counter(
        r["state"]
        for r in await db.fetch(
            "SELECT state FROM sequence.enrollments WHERE id = ANY($1)", seeded.enrollments
        )
    )
    committed: dict[str, list[datetime]] = {}
    for r in outbox:
        committed.setdefault(r["subject"], []).append(r["created_at"])
    n = len(seeded.enrollments)
    delay, to_commit, to_kafka = [], [], []
    batches: dict[datetime, list[datetime]] = {}
    for r in steps:
        deal = str(r["opportunity_id"])
        delay.append((r["executed_at"] - r["due_at"]).total_seconds() * 1000)
        commits = committed.get(deal, [])
        if commits:
            to_commit.append((commits[0] - r["due_at"]).total_seconds() * 1000)
            batches.setdefault(r["executed_at"], []).append(commits[0])
        seen = watcher.task_created.get(deal, [])
        if seen:
            due_ms = r["due_at"].timestamp() * 1000
            to_kafka.append(min(t for _, t in seen) - due_ms)
    executed = sorted(r["executed_at"] for r in steps)
    dues = sorted(r["due_at"] for r in steps)
    per_second = Counter(int((t - seeded.first_due).total_seconds()) for t in executed)
    batch_sizes = [len(v) for v in batches.values()]
    batch_ms = [(max(v) - start).total_seconds() * 1000 for start, v in batches.items()]
    active_seconds = (executed[-1] - executed[0]).total_seconds() if len(executed) > 1 else 0.0
    spread_seconds = (dues[-1] - dues[0]).total_seconds() if len(dues) > 1 else 0.0
    result = {
        "steps": len(steps),
        "offered_steps_per_s": round(n / max(spread_seconds, 1e-9), 1),
        "executed_steps_per_s": round(len(steps) / max(active_seconds, 1e-9), 1),
        "peak_steps_in_one_second": max(per_second.values(), default=0),
        "first_due_to_last_executed_s": round((executed[-1] - seeded.first_due).total_seconds(), 2)
        if executed
        else None,
        "delay_ms": percentiles(delay),
        "due_to_commit_ms": percentiles(to_commit),
        "due_to_kafka_ms": percentiles(to_kafka),
        "batches": {
            "count": len(batches),
            "steps_per_batch": {
                "mean": round(statistics.fmean(batch_sizes), 1) if batch_sizes else None,
                "max": max(batch_sizes, default=0),
            },
            "batch_ms": percentiles(batch_ms),
        },
    }
    task_counts = [r["n"] for r in tasks]
    on_kafka = [len({t for t, _ in seen}) for seen in watcher.task_created.values()]
    found = {
        "step_rows": len(steps),
        "enrollments_with_a_step_row": len({r["enrollment_id"] for r in steps}),
        "enrollments_completed": states.get("completed", 0),
        "tasks": sum(task_counts),
        "enrollments_with_two_tasks_or_more": sum(1 for c in task_counts if c > 1),
        "task_created_in_outbox": len(outbox),
        "deals_with_task_created_on_kafka": len(watcher.task_created),
        "distinct_task_created_on_kafka": sum(on_kafka),
        "deals_with_two_tasks_on_kafka": sum(1 for c in on_kafka if c > 1),
    }
    expected = {
        "step_rows": n,
        "enrollments_with_a_step_row": n,
        "enrollments_completed": n,
        "tasks": n,
        "enrollments_with_two_tasks_or_more": 0,
        "task_created_in_outbox": n,
        "deals_with_task_created_on_kafka": n,
        "distinct_task_created_on_kafka": n,
        "deals_with_two_tasks_on_kafka": 0,
    }
    checks = {
        **found,
        # A record the relay sent again after a lost ack (subscribers dedupe on its id).
        "task_created_records_on_kafka": sum(len(s) for s in watcher.task_created.values()),
        "events_on_kafka": dict(sorted(watcher.types.items())),
        "ok": found == expected,
    }
    return result, checks


# The run.


def stack(
    bench_url: str, log_dir: Path, sequence_env: dict[str, str]
) -> tuple[EmbeddedBroker, dict[str, ServiceProcess], dict[str, str]]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_dir / "sequences-broker.log")
    services = installed_services()
    secrets = {name: uuid.uuid4().hex * 2 for name in secret_names(services)}
    processes: dict[str, ServiceProcess] = {}
    for name, settings_class in services.items():
        processes[name] = bench_service(
            name,
            settings_class,
            bootstrap_servers=broker.bootstrap_servers,
            database_url=bench_url,
            secrets=secrets,
            log_file=log_dir / f"sequences-{name}.log",
            env=sequence_env if name == "sequence" else None,
        )
    return broker, processes, secrets


def per_step_ms(cpu: dict[str, float], steps: int) -> dict[str, float]:
    return {name: round(seconds * 1000 / max(1, steps), 3) for name, seconds in cpu.items()}


def sequence_settings(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, Any]]:
    """The sequence service's scheduler settings: its defaults unless given."""
    fields = installed_services()["sequence"].model_fields
    env: dict[str, str] = {}
    tick = fields["step_tick_seconds"].default
    batch = fields["step_batch_size"].default
    if args.tick_seconds is not None:
        env["DEALFLOW_STEP_TICK_SECONDS"] = str(args.tick_seconds)
        tick = args.tick_seconds
    if args.batch_size is not None:
        env["DEALFLOW_STEP_BATCH_SIZE"] = str(args.batch_size)
        batch = args.batch_size
    return env, {
        "step_tick_seconds": tick,
        "step_batch_size": batch,
        "given": sorted(env),
    }


async def main(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    server = make_url(args.database_url)

    def dsn_of(database: str) -> str:
        return str(server.set(drivername="postgresql", database=database))

    admin = await asyncpg.connect(dsn_of("postgres"))
    await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    await admin.close()
    bench_url = str(server.set(drivername="postgresql+asyncpg", database=BENCH_DATABASE))
    sequence_env, scheduler = sequence_settings(args)
    broker, processes, secrets = stack(bench_url, log_dir, sequence_env)
    # The console has no schema: it keeps no outbox to wait for.
    schemas = sorted(n for n, c in installed_services().items() if owns_database(c))
    broker.start()
    db = await asyncpg.connect(
        dsn_of(BENCH_DATABASE), server_settings={"application_name": APPLICATION_NAME}
    )
    # The samplers read pg_stat_activity on a connection of their own, while `db` polls.
    probe = await asyncpg.connect(
        dsn_of(BENCH_DATABASE), server_settings={"application_name": f"{APPLICATION_NAME}-cpu"}
    )
    watcher = TaskWatcher(broker.bootstrap_servers)
    report: dict[str, Any] = {}
    try:
        for process in processes.values():
            await process.start()
        for process in processes.values():
            await process.wait_ready(timeout=120)
        await watcher.start()
        now = int(time.time())

        def bearer(sub: str, roles: list[str]) -> dict[str, str]:
            token = mint_token(
                secrets["DEALFLOW_JWT_SECRET"], sub=sub, roles=roles, teams=["bench"], now=now
            )
            return {"Authorization": f"Bearer {token}"}

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            api = Api(
                session,
                {n: p.url for n, p in processes.items()},
                bearer("bench-manager", ["manager"]),
                bearer("bench-rep", ["rep"]),
            )
            log("template: a sequence and a deal it enrolls, through the API")
            sequence_id, deal = await template(api)
            await wait_settled(db, deal, schemas)
        tables = await tables_of(db, schemas)
        captured = Template(deal)
        await capture(db, tables, captured)
        cloned = {f"{s}.{t}": len(rows) for (s, t), rows in sorted(captured.rows.items())}
        log(f"template rows per table: {cloned}")
        running = dict(processes)
        if args.services == "sequence":
            for name in [n for n in processes if n != "sequence"]:
                await processes[name].stop()
                del running[name]
        pids = {
            **{n: p.process.pid for n, p in running.items() if p.process},
            "broker": broker.pid,
        }
        downstream = "opportunity" in running
        runs: list[dict[str, Any]] = []
        for number in range(1, args.runs + 1):
            # Idle, the processes burn some CPU too (consumers poll the broker): that rate,
            # measured now, is taken off the window's CPU for the per-step figures.
            sampler = CpuSampler(probe, pids, BENCH_DATABASE)
            await sampler.start()
            await asyncio.sleep(args.settle)
            idle_cpu = await sampler.stop()
            idle = {k: v / sampler.seconds for k, v in idle_cpu.items()}
            log(f"run {number}/{args.runs}: seeding {args.enrollments} enrollments")
            load_before = os.getloadavg()
            sampler = CpuSampler(probe, pids, BENCH_DATABASE)
            await sampler.start()
            seeded = await seed(
                db,
                tables,
                captured,
                args.enrollments,
                args.spread_seconds,
                args.lead_seconds,
                random.Random(number),
            )
            watcher.watch(seeded.deals)
            margin = (seeded.first_due - seeded.committed_at).total_seconds()
            log(
                f"  {seeded.rows} rows in {seeded.copy_seconds:.1f}s, committed "
                f"{margin:.1f}s before the first due time; steps fall due over "
                f"{args.spread_seconds:.0f}s"
            )
            seeding_cpu = await sampler.stop()
            # The window: from the first due time until everything is done.
            await asyncio.sleep(max(0.0, margin - 0.2))
            sampler = CpuSampler(probe, pids, BENCH_DATABASE)
            await sampler.start()
            done, seconds = await until_done(
                db,
                watcher,
                seeded,
                list(running),
                downstream,
                args.spread_seconds + args.lead_seconds + args.max_extra_seconds,
            )
            cpu = await sampler.stop()
            load_after = os.getloadavg()
            result, checks = await figures(db, watcher, seeded)
            log(
                f"  {result['steps']} steps ran; delay p50 {result['delay_ms']['p50']} ms, "
                f"p99 {result['delay_ms']['p99']} ms, max {result['delay_ms']['max']} ms; "
                f"checks {'ok' if checks['ok'] and done else 'FAILED'}"
            )
            bench_own = f"postgres:{APPLICATION_NAME}"  # the bench's own connections
            services_cpu = {k: v for k, v in cpu.items() if not k.startswith("postgres")}
            postgres_cpu = {
                k: v
                for k, v in cpu.items()
                if k.startswith("postgres") and not k.startswith(bench_own)
            }
            totals = {
                **services_cpu,
                "services_total": sum(services_cpu.values()),
                **postgres_cpu,
                "postgres_total": sum(postgres_cpu.values()),
            }
            idle_rate = {
                **idle,
                "services_total": sum(idle.get(k, 0.0) for k in services_cpu),
                "postgres_total": sum(idle.get(k, 0.0) for k in postgres_cpu),
            }
            net = {
                k: max(0.0, v - idle_rate.get(k, 0.0) * sampler.seconds) for k, v in totals.items()
            }
            ours = totals["services_total"] + totals["postgres_total"]
            runs.append(
                {
                    "seeding": {
                        "seconds": round(seeded.copy_seconds, 2),
                        "rows": seeded.rows,
                        "lead_margin_s": round(margin, 2),
                        "bench_backend_cpu_seconds": round(
                            sum(v for k, v in seeding_cpu.items() if k == bench_own), 2
                        ),
                    },
                    "scheduler": result,
                    "window_seconds": round(seconds, 2),
                    "complete": done,
                    "machine_during_window": {
                        "loadavg_1m_before": round(load_before[0], 2),
                        "loadavg_1m_after": round(load_after[0], 2),
                        "busy_cpu_seconds": round(sampler.machine_busy, 1),
                        "of_which_this_bench": round(ours, 1),
                        "others_share": round(1 - ours / max(sampler.machine_busy, 1e-9), 2),
                        "cores_busy": round(sampler.machine_busy / sampler.seconds, 2),
                    },
                    "cpu_seconds": {k: round(v, 2) for k, v in totals.items()},
                    "idle_cpu_seconds_per_s": {k: round(v, 3) for k, v in idle_rate.items()},
                    "cpu_ms_per_step": per_step_ms(net, result["steps"]),
                    "checks": checks,
                }
            )
        median = medians(runs)
        report = {
            "benchmark": "sequences",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": host_platform.python_version(),
                "postgres": await db.fetchval("SHOW server_version"),
                "broker": "Tansu (embedded, memory storage)",
                "uptime_load_at_end": [round(v, 2) for v in os.getloadavg()],
            },
            "config": {
                "enrollments": args.enrollments,
                "spread_seconds": args.spread_seconds,
                "lead_seconds": args.lead_seconds,
                "runs": args.runs,
                "services_running": sorted(running),
                "sequence_scheduler": scheduler,
                "sequence_id": str(sequence_id),
                "seeding": "clones of one deal enrolled through the API (a sequence with one "
                "task step), COPY into every service's tables; next due times set on the "
                "real clock",
                "template_rows": cloned,
            },
            "median": median,
            "runs": runs,
            "peak_memory_mb": {
                **{name: peak_rss_mb(p.process.pid) for name, p in running.items() if p.process},
                "broker": peak_rss_mb(broker.pid),
            },
            "target": {
                "delay_p99_ms": TARGET_P99_DELAY_MS,
                "met": bool(
                    median.get("scheduler.delay_ms.p99", 1e9) < TARGET_P99_DELAY_MS
                    and all(r["checks"]["ok"] and r["complete"] for r in runs)
                ),
            },
        }
    finally:
        await watcher.stop()
        await asyncio.gather(*(p.stop() for p in processes.values()), return_exceptions=True)
        broker.stop()
        await db.close()
        await probe.close()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="make bench-sequences", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--enrollments", type=int, default=10_000, help="active enrollments")
    parser.add_argument(
        "--spread-seconds",
        type=float,
        default=60.0,
        help="their steps fall due at uniformly random times over this long",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh seed")
    parser.add_argument(
        "--services",
        choices=("sequence", "all"),
        default="sequence",
        help="during the runs, the sequence service alone with the broker (the scheduler's "
        "figure), or every service (the others react to each task on the same cores)",
    )
    parser.add_argument(
        "--lead-seconds",
        type=float,
        default=3.0,
        help="the first step falls due this long after the seed is committed",
    )
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=None,
        help="DEALFLOW_STEP_TICK_SECONDS of the sequence service (default: its own)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="DEALFLOW_STEP_BATCH_SIZE of the sequence service (default: its own)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds of quiet before each run, when idle CPU is measured",
    )
    parser.add_argument(
        "--max-extra-seconds",
        type=float,
        default=300.0,
        help="give up this long after the last due time (what is missing is reported)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help=f"a PostgreSQL server; the benchmark creates and uses database {BENCH_DATABASE}",
    )
    args = parser.parse_args()
    if args.enrollments < 1 or args.spread_seconds <= 0:
        parser.error("at least one enrollment, over a positive spread")
    log_dir = Path("bench/results/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main(args, log_dir))
    keep_report(report, "sequences")


if __name__ == "__main__":
    cli()
