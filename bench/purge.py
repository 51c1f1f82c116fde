"""`make bench-purge`: the purge benchmark. Not a test: it measures and prints a JSON report.

Starts the embedded stack (Tansu and every service as its own process, as `make bench`
does) on a fresh PostgreSQL database, then:

1. templates, through the real path: one won and one lost deal, each with K quotes
   (plus an extra owner, a note, its sales history), made over the REST API; the
   bench waits until every service has applied their events (the purge service knows
   the deal closed and its K quotes, the opportunity service counts K quotes, the
   order service holds the won deal's order, every outbox is sent);
2. seeding, per run: N clones of the templates written straight into the services'
   tables with COPY. A clone is every row of every service that mentions a template
   (its deal, its quotes, lines, order, projections, event sequence counters), with
   every id the template owns replaced by a fresh one and every moment moved back
   by SHIFT_DAYS, so the services hold exactly what the real events would have left,
   consistent across services. Going through the API instead costs a dozen HTTP
   calls and some 15 events per deal, each applied by several services: 10,000 deals
   would take longer than the purge, and would have closed now, not past retention;
3. the purge, through the real services, broker and database: the policy (retention
   of 30 days, which every clone is past and the templates are not; the largest
   batch size the service allows; a schedule that never fires during the bench),
   `POST /purge/runs`, `GET /purge/runs/{id}` until it has finished, and more runs
   until every deal is purged (a deal a run failed is taken up by a later run once
   due, as the schedule would). Meanwhile the CPU time of every process is sampled
   from /proc: each service, the broker, and the PostgreSQL backends of the bench
   database by application name; per deal it is reported net of the idle rate
   measured just before (consumers polling the broker burn CPU when idle too);
4. checks: every cloned deal and quote is gone from the live tables and in the
   archives, their orders are untouched, the templates are kept.

    make bench-purge                                        # 10,000 deals, 3 quotes each
    make bench-purge BENCH_ARGS="--deals 500 --runs 3"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform as host_platform
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from sqlalchemy.engine import make_url

from bench.deals import peak_rss_mb
from bench.measure import CpuSampler, bench_service, keep_report, medians
from dealflow_common.auth import mint_token
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.embedded import secret_names
from dealflow_common.runtime.processes import ServiceProcess, installed_services, owns_database

BENCH_DATABASE = "dealflow_bench_purge"
# Each service keeps its tables in a schema of its name; every installed one is cloned
# (a service that joins later, such as sequence, is taken along).
# The console has no schema: it keeps no outbox to wait for.
SCHEMAS = tuple(sorted(n for n, c in installed_services().items() if owns_database(c)))
# Event history, not state: a clone has no past events to publish or to skip again.
NOT_CLONED = frozenset({"outbox", "inbox", "alembic_version"})
# Ids a deal refers to without owning them: a clone keeps the catalog's.
SHARED_ID_COLUMNS = frozenset({"product_id", "bundle_id"})
SHIFT_DAYS = 400
RETENTION_DAYS = 30
NEVER_DURING_THE_BENCH = "0 0 29 2 *"  # 29 February, midnight
TARGET_DEALS = 10_000  # with 3 quotes each: issue 7, item 9
TARGET_SECONDS = 60.0
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# 1. Templates, through the real path.


@dataclass
class Api:
    session: aiohttp.ClientSession
    urls: dict[str, str]
    sales: dict[str, str]
    operator: dict[str, str]

    async def call(
        self, method: str, url: str, body: Any = None, *, as_operator: bool = False
    ) -> Any:
        headers = self.operator if as_operator else self.sales
        for attempt in range(50):
            async with self.session.request(method, url, json=body, headers=headers) as response:
                text = await response.read()
                payload = orjson.loads(text) if text else None
                # A quote for a deal the quote service has not heard of yet: it will.
                if response.status in (404, 409) and attempt < 49 and "/quotes" in url:
                    await asyncio.sleep(0.1)
                    continue
                if response.status >= 300:
                    raise RuntimeError(f"{method} {url} -> {response.status}: {payload}")
                return payload
        raise AssertionError("unreachable")


async def template_deal(api: Api, *, won: bool, quotes: int) -> uuid.UUID:
    """A deal closed through the API with `quotes` quotes, as a user would make it."""
    opportunity, quote = api.urls["opportunity"], api.urls["quote"]
    deal = (
        await api.call(
            "POST",
            f"{opportunity}/opportunities",
            {
                "title": "Purge bench deal",
                "customer": {"kind": "organization", "id": "bench", "name": "Bench Corp"},
                "value": {"amount": "3000.00", "currency": "USD"},
            },
        )
    )["id"]
    base = f"{opportunity}/opportunities/{deal}"
    await api.call("POST", f"{base}/owners", {"user_id": "bench-colleague"})
    await api.call("POST", f"{base}/stage", {"stage": "qualification", "note": "Budget confirmed"})
    line = {
        "description": "Seat",
        "quantity": "3",
        "unit_price": {"amount": "1000.00", "currency": "USD"},
    }
    ids = []
    for _ in range(quotes):
        created = await api.call(
            "POST", f"{quote}/quotes", {"opportunity_id": deal, "lines": [line]}
        )
        ids.append(created["id"])
    await api.call("POST", f"{base}/stage", {"stage": "proposal"})
    for n, quote_id in enumerate(ids):
        if n < 2:  # the first presented, the second presented and abandoned, others drafts
            await api.call("POST", f"{quote}/quotes/{quote_id}/present")
        if n == 1:
            await api.call(
                "POST", f"{quote}/quotes/{quote_id}/abandon", {"reason": "customer chose A"}
            )
    if won:
        await api.call("POST", f"{base}/stage", {"stage": "negotiation"})
        await api.call("POST", f"{quote}/quotes/{ids[0]}/accept")
    else:
        await api.call("POST", f"{base}/lose", {"reason": "budget cut", "note": "Next year"})
    return uuid.UUID(deal)


async def settled(db: asyncpg.Connection, deals: list[uuid.UUID], quotes: int, won: int) -> bool:
    """Has every service applied every event of the templates?"""
    checks = [
        (
            "SELECT count(*) FROM purge.known_deals WHERE opportunity_id = ANY($1) "
            "AND stage IN ('closed_won', 'closed_lost') AND closed_at IS NOT NULL",
            len(deals),
        ),
        (
            "SELECT count(*) FROM purge.known_quotes WHERE opportunity_id = ANY($1)",
            len(deals) * quotes,
        ),
        (
            "SELECT count(*) FROM opportunity.quote_presence WHERE opportunity_id = ANY($1)",
            len(deals) * quotes,
        ),
        (
            "SELECT count(*) FROM quote.known_opportunities WHERE id = ANY($1) "
            "AND stage IN ('closed_won', 'closed_lost')",
            len(deals),
        ),
        ('SELECT count(*) FROM "order".orders WHERE opportunity_id = ANY($1)', won),
        (
            "SELECT count(*) FROM opportunity.opportunities WHERE id = ANY($1) "
            "AND (stage = 'closed_lost' OR order_id IS NOT NULL)",
            len(deals),
        ),
    ]
    for query, expected in checks:
        if await db.fetchval(query, deals) != expected:
            return False
    for schema in SCHEMAS:
        if await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE sent_at IS NULL'):
            return False
    return True


# 2. Seeding: clones of the templates' rows in every service's tables.


@dataclass
class Table:
    schema: str
    name: str
    columns: list[str]
    """The columns a clone writes (not the ones the database numbers itself)."""
    uuid_columns: list[str]
    parents: set[tuple[str, str]]


@dataclass
class Template:
    deal: uuid.UUID
    won: bool
    rows: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)
    owned: set[uuid.UUID] = field(default_factory=set)
    quotes: set[uuid.UUID] = field(default_factory=set)


async def tables_of(db: asyncpg.Connection, schemas: Sequence[str] = SCHEMAS) -> list[Table]:
    """Every table of the services' schemas, parents before the tables that refer to them."""
    columns = await db.fetch(
        "SELECT table_schema, table_name, column_name, data_type, column_default, is_identity "
        "FROM information_schema.columns WHERE table_schema = ANY($1) "
        "ORDER BY table_schema, table_name, ordinal_position",
        list(schemas),
    )
    found: dict[tuple[str, str], Table] = {}
    for c in columns:
        key = (c["table_schema"], c["table_name"])
        if key[1] in NOT_CLONED:
            continue
        table = found.setdefault(key, Table(key[0], key[1], [], [], set()))
        if (c["column_default"] or "").startswith("nextval(") or c["is_identity"] == "YES":
            continue
        if c["data_type"] == "tsvector":
            # A search vector is derived from its row's text, and COPY's binary format
            # has no encoder for it: clones are left out of full-text search (nullable).
            continue
        table.columns.append(c["column_name"])
        if c["data_type"] == "uuid":
            table.uuid_columns.append(c["column_name"])
    for fk in await db.fetch(
        "SELECT cn.nspname AS schema, c.relname AS child, pn.nspname AS parent_schema, "
        "p.relname AS parent FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace "
        "JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace "
        "WHERE k.contype = 'f' AND cn.nspname = ANY($1)",
        list(schemas),
    ):
        child = (fk["schema"], fk["child"])
        if child in found:
            found[child].parents.add((fk["parent_schema"], fk["parent"]))
    ordered: list[Table] = []
    placed: set[tuple[str, str]] = set()
    while len(ordered) < len(found):
        for key, table in sorted(found.items()):
            if key not in placed and table.parents <= placed | {key}:
                ordered.append(table)
                placed.add(key)
    return ordered


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
    template.quotes = {r[0] for r in template.rows.get(("quote", "quotes"), [])}


@dataclass
class Seed:
    deals: list[uuid.UUID]
    quotes: list[uuid.UUID]
    won_deals: list[uuid.UUID]
    seconds: float
    rows: int


def _cloner(template: Template, shift: timedelta) -> Any:
    mapping = {u: uuid.uuid4() for u in template.owned}
    as_text = {str(old): str(new) for old, new in mapping.items()}

    def value(v: Any) -> Any:
        if isinstance(v, uuid.UUID):
            return mapping.get(v, v)
        if isinstance(v, datetime):
            return v - shift
        if isinstance(v, date):
            return v - timedelta(days=shift.days)
        if isinstance(v, str) and UUID_TEXT.search(v):
            return UUID_TEXT.sub(lambda m: as_text.get(m.group(0), m.group(0)), v)
        return v

    return mapping, value


async def seed(
    db: asyncpg.Connection, tables: list[Table], templates: list[Template], deals: int
) -> Seed:
    """`deals` clones of the templates in turn, each moved back SHIFT_DAYS and a second more
    than the one before (distinct closed times), written with COPY in one transaction."""
    started = time.perf_counter()
    records: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    made = Seed([], [], [], 0.0, 0)
    stamp = int(time.time())  # clones of later runs are a little older still
    for n in range(deals):
        template = templates[n % len(templates)]
        mapping, value = _cloner(template, timedelta(days=SHIFT_DAYS, seconds=stamp % 86400 + n))
        made.deals.append(mapping[template.deal])
        made.quotes.extend(mapping[q] for q in template.quotes)
        if template.won:
            made.won_deals.append(mapping[template.deal])
        for key, rows in template.rows.items():
            into = records.setdefault(key, [])
            into.extend(tuple(value(v) for v in row) for row in rows)
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
                made.rows += len(records[key])
    for key in records:
        await db.execute(f'ANALYZE "{key[0]}"."{key[1]}"')
    made.seconds = time.perf_counter() - started
    return made


# 3. CPU time of every process while the purge runs.


# 4. Checks.


async def check(db: asyncpg.Connection, seeded: Seed, templates: list[Template]) -> dict[str, Any]:
    deals, quotes = seeded.deals, seeded.quotes

    async def count(query: str, *args: Any) -> int:
        return int(await db.fetchval(query, *args))

    found = {
        "opportunities_left": await count(
            "SELECT count(*) FROM opportunity.opportunities WHERE id = ANY($1)", deals
        ),
        "opportunity_children_left": sum(
            [
                await count(
                    f"SELECT count(*) FROM opportunity.{t} WHERE opportunity_id = ANY($1)", deals
                )
                for t in ("opportunity_owners", "notes", "sales_history", "assignment_history")
            ]
        ),
        "opportunities_archived": await count(
            "SELECT count(*) FROM opportunity.opportunity_archive WHERE opportunity_id = ANY($1)",
            deals,
        ),
        "quotes_left": await count("SELECT count(*) FROM quote.quotes WHERE id = ANY($1)", quotes),
        "quote_lines_left": await count(
            "SELECT count(*) FROM quote.quote_lines WHERE quote_id = ANY($1)", quotes
        ),
        "quotes_archived": await count(
            "SELECT count(*) FROM quote.quote_archive WHERE quote_id = ANY($1)", quotes
        ),
        "orders_kept": await count(
            'SELECT count(*) FROM "order".orders WHERE opportunity_id = ANY($1)', deals
        ),
        "deal_purges_purged": await count(
            "SELECT count(*) FROM purge.deal_purges WHERE opportunity_id = ANY($1) "
            "AND state = 'purged'",
            deals,
        ),
        "templates_kept": await count(
            "SELECT count(*) FROM opportunity.opportunities WHERE id = ANY($1)",
            [t.deal for t in templates],
        ),
    }
    expected = {
        "opportunities_left": 0,
        "opportunity_children_left": 0,
        "opportunities_archived": len(deals),
        "quotes_left": 0,
        "quote_lines_left": 0,
        "quotes_archived": len(quotes),
        "orders_kept": len(seeded.won_deals),
        "deal_purges_purged": len(deals),
        "templates_kept": len(templates),
    }
    return {**found, "ok": found == expected}


# The run.


def stack(
    bench_url: str, log_dir: Path
) -> tuple[EmbeddedBroker, dict[str, ServiceProcess], dict[str, str]]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_dir / "broker.log")
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
            log_file=log_dir / f"purge-{name}.log",
        )
    return broker, processes, secrets


async def follow(api: Api, started: float) -> list[dict[str, Any]]:
    """Start a run and poll it until it has finished; the runs seen, last the finished one.

    A run whose process lost its database connections mid-way stops without finishing
    and keeps the agent's lock until its lease runs out: the POST repeated every few
    seconds answers with it until then, and afterwards starts the run that takes over.
    """
    purge = api.urls["purge"]
    run = await api.call("POST", f"{purge}/purge/runs", {}, as_operator=True)
    seen = {run["id"]: run}
    last_report = last_post = time.perf_counter()
    while run["finished_at"] is None:
        # Not more often: each GET counts the run's items so far, in the purge service.
        await asyncio.sleep(1.0)
        try:
            run = await api.call("GET", f"{purge}/purge/runs/{run['id']}", as_operator=True)
            if time.perf_counter() - last_post > 5 and run["finished_at"] is None:
                last_post = time.perf_counter()
                going = await api.call("POST", f"{purge}/purge/runs", {}, as_operator=True)
                if going["id"] != run["id"]:
                    log(f"  run {run['id']} stopped mid-way; run {going['id']} took over")
                    run = going
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as error:
            log(f"  polling failed, going on: {str(error)[:200]}")
            continue
        seen[run["id"]] = run
        if time.perf_counter() - last_report > 5:
            last_report = time.perf_counter()
            log(
                f"  {time.perf_counter() - started:5.1f}s: run {len(seen)}: examined "
                f"{run['examined']}, purged {run['purged']}, failed {run['failed']}"
            )
    return list(seen.values())


async def not_purged(db: asyncpg.Connection, deals: list[uuid.UUID]) -> tuple[int, datetime | None]:
    """How many seeded deals are not purged yet, and when the agent takes the next one up."""
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE state IS DISTINCT FROM 'purged') AS left, "
        "min(CASE WHEN state = 'failed' THEN next_attempt_at "
        "WHEN state <> 'purged' THEN deadline END) AS due "
        "FROM unnest($1::uuid[]) AS d(id) LEFT JOIN purge.deal_purges p ON p.opportunity_id = d.id",
        deals,
    )
    return int(row["left"]), row["due"]


async def purge_backlog(
    api: Api, db: asyncpg.Connection, deals: list[uuid.UUID], max_seconds: float
) -> tuple[list[dict[str, Any]], float, int]:
    """Runs until every seeded deal is purged: (the runs, seconds, deals left).

    Deals a run could not finish (failed, retried with backoff) are taken up by a later
    run once due, as the schedule would: the bench starts that run when the first is due.
    """
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    while True:
        runs.extend(await follow(api, started))
        left, due = await not_purged(db, deals)
        elapsed = time.perf_counter() - started
        if left == 0 or elapsed > max_seconds:
            return runs, elapsed, left
        wait = 1.0 if due is None else (due - datetime.now(UTC)).total_seconds() + 0.5
        log(f"  {left} deals left; the next is due in {wait:.0f}s")
        await asyncio.sleep(min(max(wait, 0.5), max_seconds - elapsed + 1))


async def purged_by(
    db: asyncpg.Connection, deals: list[uuid.UUID], started_at: str
) -> dict[str, float | None]:
    """Seconds from the first run's start until 50, 90, 99 and 100 % of the deals were purged."""
    row = await db.fetchrow(
        "SELECT percentile_disc(ARRAY[0.5, 0.9, 0.99, 1.0]) WITHIN GROUP (ORDER BY updated_at) "
        "AS at FROM purge.deal_purges WHERE opportunity_id = ANY($1) AND state = 'purged'",
        deals,
    )
    start = datetime.fromisoformat(started_at)
    names = ("p50", "p90", "p99", "all")
    moments = row["at"] or [None] * len(names)
    return {
        n: None if m is None else round((m - start).total_seconds(), 1)
        for n, m in zip(names, moments, strict=True)
    }


def count_lines(path: Path, text: str) -> int:
    with path.open(errors="replace") as f:
        return sum(text in line for line in f)


def per_deal_ms(cpu: dict[str, float], deals: int) -> dict[str, float]:
    return {name: round(seconds * 1000 / max(1, deals), 3) for name, seconds in cpu.items()}


async def main(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    server = make_url(args.database_url)

    def dsn_of(database: str) -> str:
        return str(server.set(drivername="postgresql", database=database))

    admin = await asyncpg.connect(dsn_of("postgres"))
    await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    await admin.close()
    bench_url = str(server.set(drivername="postgresql+asyncpg", database=BENCH_DATABASE))
    broker, processes, secrets = stack(bench_url, log_dir)
    broker.start()
    db = await asyncpg.connect(
        dsn_of(BENCH_DATABASE), server_settings={"application_name": "bench-purge"}
    )
    report: dict[str, Any] = {}
    try:
        for process in processes.values():
            await process.start()
        for process in processes.values():
            await process.wait_ready(timeout=120)
        now = int(time.time())
        sales = mint_token(
            secrets["DEALFLOW_JWT_SECRET"],
            sub="bench",
            roles=["rep", "manager"],
            teams=["bench"],
            now=now,
        )
        operator = mint_token(
            secrets["DEALFLOW_JWT_SECRET"],
            sub="bench-operator",
            roles=["operator"],
            teams=[],
            now=now,
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            api = Api(
                session,
                {n: p.url for n, p in processes.items()},
                {"Authorization": f"Bearer {sales}"},
                {"Authorization": f"Bearer {operator}"},
            )
            log("templates: a won and a lost deal through the API")
            won = await template_deal(api, won=True, quotes=args.quotes_per_deal)
            lost = await template_deal(api, won=False, quotes=args.quotes_per_deal)
            deadline = time.perf_counter() + 60
            while not await settled(db, [won, lost], args.quotes_per_deal, 1):
                if time.perf_counter() > deadline:
                    raise RuntimeError("the templates' events were not all applied in 60 s")
                await asyncio.sleep(0.2)
            await asyncio.sleep(3.0)  # late consumers of events nobody waits for
            tables = await tables_of(db)
            templates = [Template(won, True), Template(lost, False)]
            for template in templates:
                await capture(db, tables, template)
            cloned: dict[str, int] = {}
            for template in templates:
                for (schema, name), rows in sorted(template.rows.items()):
                    cloned[f"{schema}.{name}"] = cloned.get(f"{schema}.{name}", 0) + len(rows)
            log(f"template rows per table (both deals): {cloned}")
            batch_size = args.batch_size
            policy = await api.call(
                "PUT",
                f"{api.urls['purge']}/purge/policy",
                {
                    "retention_days_won": RETENTION_DAYS,
                    "retention_days_lost": RETENTION_DAYS,
                    "batch_size": batch_size,
                    "schedule": NEVER_DURING_THE_BENCH,
                },
                as_operator=True,
            )
            runs: list[dict[str, Any]] = []
            for number in range(1, args.runs + 1):
                log(f"run {number}/{args.runs}: seeding {args.deals} deals")
                seeded = await seed(db, tables, templates, args.deals)
                log(f"  {seeded.rows} rows in {seeded.seconds:.1f}s; purging")
                pids = {
                    **{n: p.process.pid for n, p in processes.items() if p.process},
                    "broker": broker.pid,
                }
                # Idle, the processes burn some CPU too (consumers poll the broker): that
                # rate, measured now, is taken off the run's CPU for the per-deal figures.
                sampler = CpuSampler(db, pids, BENCH_DATABASE)
                await sampler.start()
                await asyncio.sleep(args.settle)
                idle = {k: v / args.settle for k, v in (await sampler.stop()).items()}
                sampler = CpuSampler(db, pids, BENCH_DATABASE)
                await sampler.start()
                refusals = count_lines(log_dir / "purge-opportunity.log", "refused")
                purge_runs, seconds, left = await purge_backlog(
                    api, db, seeded.deals, args.max_seconds
                )
                cpu = await sampler.stop()
                checked = await check(db, seeded, templates)
                first = purge_runs[0]
                quotes = checked["quotes_archived"]
                purged = len(seeded.deals) - left
                services_cpu = {k: v for k, v in cpu.items() if not k.startswith("postgres")}
                postgres_cpu = {k: v for k, v in cpu.items() if k.startswith("postgres")}
                cpu = {
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
                net = {k: max(0.0, v - idle_rate.get(k, 0.0) * seconds) for k, v in cpu.items()}
                ours = cpu["services_total"] + cpu["postgres_total"]
                machine = {
                    "busy_cpu_seconds": round(sampler.machine_busy, 1),
                    "of_which_this_bench": round(ours, 1),
                    "others_share": round(1 - ours / max(sampler.machine_busy, 1e-9), 2),
                    "cores_busy": round(sampler.machine_busy / seconds, 2),
                }
                timeline = await purged_by(db, seeded.deals, first["started_at"])
                log(
                    f"  {purged} deals purged in {seconds:.1f}s by {len(purge_runs)} runs, "
                    f"checks {'ok' if checked['ok'] else 'FAILED'}"
                )
                runs.append(
                    {
                        "seeding": {"seconds": round(seeded.seconds, 2), "rows": seeded.rows},
                        "backlog": {
                            "seconds": round(seconds, 2),
                            "deals_purged": purged,
                            "deals_left": left,
                            "quotes_purged": quotes,
                            "deals_per_s": round(purged / seconds, 1),
                            "quotes_per_s": round(quotes / seconds, 1),
                            "runs": len(purge_runs),
                            "seconds_until_purged": timeline,
                        },
                        "first_run": {
                            "status": first["status"],
                            "duration_seconds": first["duration_seconds"],
                            "examined": first["examined"],
                            "purged": first["purged"],
                            "failed": first["failed"],
                            "error": first["error"],
                        },
                        "runs": [
                            {
                                k: r[k]
                                for k in ("id", "status", "duration_seconds", "purged", "failed")
                            }
                            for r in purge_runs
                        ],
                        "opportunity_refusals": count_lines(
                            log_dir / "purge-opportunity.log", "refused"
                        )
                        - refusals,
                        "machine_during_run": machine,
                        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
                        "idle_cpu_seconds_per_s": {k: round(v, 3) for k, v in idle_rate.items()},
                        "cpu_ms_per_deal": per_deal_ms(net, purged),
                        "checks": checked,
                    }
                )
        median = medians(runs)
        report = {
            "benchmark": "purge",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": host_platform.python_version(),
                "postgres": await db.fetchval("SHOW server_version"),
                "broker": "Tansu (embedded, memory storage)",
            },
            "config": {
                "deals": args.deals,
                "quotes_per_deal": args.quotes_per_deal,
                "runs": args.runs,
                "policy": {k: policy[k] for k in ("retention_days_won", "batch_size", "schedule")},
                "seeding": "clones of a won and a lost deal made through the API, COPY into "
                "every service's tables",
                "template_rows": cloned,
            },
            "median": median,
            "runs": runs,
            "peak_memory_mb": {
                **{name: peak_rss_mb(p.process.pid) for name, p in processes.items() if p.process},
                "broker": peak_rss_mb(broker.pid),
            },
            "target": {
                "deals": TARGET_DEALS,
                "whole_backlog_seconds": TARGET_SECONDS,
                # Judged on the backlog only: a smaller one says nothing of it.
                "met": bool(
                    median.get("backlog.seconds", 1e9) < TARGET_SECONDS
                    and all(r["checks"]["ok"] for r in runs)
                )
                if args.deals >= TARGET_DEALS and args.quotes_per_deal >= 3
                else None,
            },
        }
    finally:
        await asyncio.gather(*(p.stop() for p in processes.values()), return_exceptions=True)
        broker.stop()
        await db.close()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(prog="make bench-purge", description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=10_000, help="closed deals to purge per run")
    parser.add_argument("--quotes-per-deal", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh seed")
    largest = installed_services()["purge"].model_fields["purge_max_batch_size"].default
    parser.add_argument(
        "--batch-size",
        type=int,
        default=largest,
        help=f"the policy's batch size (default: the largest the purge service allows, {largest})",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=1800.0,
        help="give up on a backlog after this long (deals left are reported)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds of quiet between seeding and the run, when idle CPU is measured",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help=f"a PostgreSQL server; the benchmark creates and uses database {BENCH_DATABASE}",
    )
    args = parser.parse_args()
    if args.quotes_per_deal < 1 or args.deals < 1:
        parser.error("a deal needs at least one quote (the won template accepts one)")
    log_dir = Path("bench/results/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main(args, log_dir))
    keep_report(report, "purge")


if __name__ == "__main__":
    cli()
