"""`make bench-reporting`: the reporting read side under 100,000 deals. Not a test: it
measures and prints a JSON report.

1. Starts the broker and the reporting service as its own process (as `make run` does)
   on a fresh PostgreSQL database (`dealflow_bench_reporting`), migrated by the service.
2. Seeds the read model with N deals (100,000 by default) with COPY: open in every
   stage, won and lost, in USD, EUR and GBP, owned by 40 reps in 8 teams, expected to
   close over the next 24 months, and derives the sums the consumer keeps as deals
   change (`deal_sums`, `deal_owner_sums`) with INSERT ... SELECT; timed apart.
   Exchange rates are set through `PUT /exchange-rates`, and the tables analysed, as
   autovacuum would.
3. Measures, per report, R requests one after another over real HTTP (p50, p95, p99,
   max) and the CPU seconds of each process in that window (the service, the broker,
   the bench database's PostgreSQL backends by application name), net of the idle rate
   measured just before, per request:
   - `GET /pipeline` as an admin (every deal) and as a manager (two teams' deals);
   - `GET /forecast?period=quarter` as an admin, and by owner as a manager.

    make bench-reporting                                     # 100,000 deals, 300 requests each
    make bench-reporting BENCH_ARGS="--deals 20000 --requests 100 --runs 3"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host_platform
import random
import statistics
import sys
import time
import uuid
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
from dealflow_common.runtime.processes import installed_services

BENCH_DATABASE = "dealflow_bench_reporting"
APPLICATION_NAME = "bench-reporting"
TARGET_P99_MS = 100.0
OPEN_STAGES = ("lead", "qualification", "proposal", "negotiation")
PROBABILITY = {"lead": 10, "qualification": 25, "proposal": 50, "negotiation": 75}
TEAMS = [f"team-{n}" for n in range(8)]
REPS = [f"rep-{n}" for n in range(40)]  # rep-n is in team-(n % 8)
CURRENCIES = [("USD", 0.7), ("EUR", 0.2), ("GBP", 0.1)]


def log(message: str) -> None:
    print(f"[bench-reporting] {message}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
    }


def deal_rows(count: int, today: date, rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    """Deals as the projection would have written them, and their owners."""
    deals, owners = [], []
    created = datetime.now(UTC) - timedelta(days=200)
    for _ in range(count):
        deal_id = uuid.uuid4()
        rep = rng.choice(REPS)
        team = TEAMS[int(rep.split("-")[1]) % len(TEAMS)]
        currency = rng.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
        amount = rng.randrange(1_000_00, 500_000_00)
        roll = rng.random()
        closes = today + timedelta(days=rng.randrange(0, 730))
        if roll < 0.7:
            stage = rng.choice(OPEN_STAGES)
            probability, outcome, closed_at, closed_on = PROBABILITY[stage], None, None, None
            won_currency = won_amount = lost_reason = cycle = None
            furthest = OPEN_STAGES.index(stage)
        else:
            won = roll < 0.85
            stage = "closed_won" if won else "closed_lost"
            probability = 100 if won else 0
            outcome = "won" if won else "lost"
            closed_at = created + timedelta(days=rng.randrange(1, 199))
            closed_on = closed_at.date()
            won_currency, won_amount = (currency, amount) if won else (None, None)
            lost_reason = None if won else rng.choice(["price", "timing", "competitor"])
            cycle = (closed_at - created).total_seconds() / 86400
            furthest = 4 if won else rng.randrange(0, 4)
        deals.append(
            (
                deal_id,
                "Bench deal",
                f"customer-{rng.randrange(5000)}",
                "Bench customer",
                rng.choice(["web", "referral", "trade_show", None]),
                currency,
                amount,
                stage,
                probability,
                closes,
                team,
                rep,
                json.dumps([rep]),
                created,
                closed_at,
                closed_on,
                outcome,
                won_currency,
                won_amount,
                lost_reason,
                cycle,
                furthest,
                None,
                "{}",
            )
        )
        owners.append((deal_id, rep))
    return deals, owners


DEAL_COLUMNS = [
    "opportunity_id",
    "title",
    "customer_id",
    "customer_name",
    "lead_origin",
    "currency",
    "amount_minor",
    "stage",
    "probability",
    "expected_close_date",
    "team_id",
    "created_by",
    "owners",
    "created_at",
    "closed_at",
    "closed_on",
    "outcome",
    "won_currency",
    "won_amount_minor",
    "lost_reason",
    "cycle_days",
    "furthest_stage",
    "purged_at",
    "applied",
]


async def seed(db: asyncpg.Connection, count: int, today: date) -> dict[str, float]:
    started = time.perf_counter()
    deals, owners = deal_rows(count, today, random.Random(11))
    generated = time.perf_counter()
    await db.execute(
        "TRUNCATE reporting.deal_owner_sums, reporting.deal_sums, reporting.deal_shares, "
        "reporting.deal_owners, reporting.deals"
    )
    await db.copy_records_to_table(
        "deals", schema_name="reporting", records=deals, columns=DEAL_COLUMNS
    )
    await db.copy_records_to_table(
        "deal_owners",
        schema_name="reporting",
        records=owners,
        columns=["opportunity_id", "owner"],
    )
    copied = time.perf_counter()
    # The sums the consumer keeps as deals change (domain.deal.contributions), derived
    # here in one statement over the copied deals.
    await db.execute(KEPT_SUMS)
    summed = time.perf_counter()
    await db.execute("ANALYZE reporting.deals")
    await db.execute("ANALYZE reporting.deal_owners")
    await db.execute("ANALYZE reporting.deal_sums")
    await db.execute("ANALYZE reporting.deal_owner_sums")
    return {
        "generate_s": round(generated - started, 2),
        "copy_s": round(copied - generated, 2),
        "kept_sums_s": round(summed - copied, 2),
        "analyze_s": round(time.perf_counter() - summed, 2),
    }


KEPT_SUMS = """
INSERT INTO reporting.deal_sums
SELECT 'open', stage, coalesce(team_id, ''), coalesce(lead_origin, ''), currency,
       coalesce(extract(year FROM expected_close_date)::int, 0),
       coalesce(extract(month FROM expected_close_date)::int, 0),
       count(*), sum(amount_minor), sum(amount_minor * probability)
FROM reporting.deals
WHERE stage IN ('lead', 'qualification', 'proposal', 'negotiation')
GROUP BY 2, 3, 4, 5, 6, 7
UNION ALL
SELECT 'won', '', coalesce(team_id, ''), coalesce(lead_origin, ''), won_currency,
       extract(year FROM closed_on)::int, extract(month FROM closed_on)::int,
       count(*), sum(won_amount_minor), 0
FROM reporting.deals
WHERE outcome = 'won'
GROUP BY 2, 3, 4, 5, 6, 7;
INSERT INTO reporting.deal_owner_sums
SELECT 'open', stage, coalesce(o.owner, ''), coalesce(team_id, ''), coalesce(lead_origin, ''),
       currency,
       coalesce(extract(year FROM expected_close_date)::int, 0),
       coalesce(extract(month FROM expected_close_date)::int, 0),
       count(*), sum(amount_minor), sum(amount_minor * probability)
FROM reporting.deals d LEFT JOIN reporting.deal_owners o USING (opportunity_id)
WHERE stage IN ('lead', 'qualification', 'proposal', 'negotiation')
GROUP BY 2, 3, 4, 5, 6, 7, 8
UNION ALL
SELECT 'won', '', coalesce(o.owner, ''), coalesce(team_id, ''), coalesce(lead_origin, ''),
       won_currency,
       extract(year FROM closed_on)::int, extract(month FROM closed_on)::int,
       count(*), sum(won_amount_minor), 0
FROM reporting.deals d LEFT JOIN reporting.deal_owners o USING (opportunity_id)
WHERE outcome = 'won'
GROUP BY 2, 3, 4, 5, 6, 7, 8
"""


async def measure(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    requests: int,
    probe: asyncpg.Connection,
    pids: dict[str, int],
    idle: dict[str, float],
) -> dict[str, Any]:
    for _ in range(5):  # warm: connections, caches, the plan
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            await response.read()
    sampler = CpuSampler(probe, pids, BENCH_DATABASE)
    await sampler.start()
    latencies = []
    body = b""
    for _ in range(requests):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            assert response.status == 200, body
        latencies.append((time.perf_counter() - started) * 1000)
    cpu = await sampler.stop()
    net = {
        name: max(0.0, seconds - idle.get(name, 0.0) * sampler.seconds)
        for name, seconds in cpu.items()
        if not name.endswith(f"{APPLICATION_NAME}-cpu")
    }
    return {
        "latency_ms": percentiles(latencies),
        "requests_per_s": round(requests / sampler.seconds, 1),
        "cpu_ms_per_request": {
            name: round(seconds * 1000 / requests, 3) for name, seconds in sorted(net.items())
        },
        "answer_bytes": len(body),
        "answer_sample": orjson.loads(body) if len(body) < 1500 else "(long)",
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
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_dir / "reporting-broker.log")
    services = installed_services()
    secrets = {name: uuid.uuid4().hex * 2 for name in secret_names(services)}
    service = bench_service(
        "reporting",
        services["reporting"],
        bootstrap_servers=broker.bootstrap_servers,
        database_url=bench_url,
        secrets=secrets,
        log_file=log_dir / "reporting-service.log",
    )
    broker.start()
    db = await asyncpg.connect(
        dsn_of(BENCH_DATABASE), server_settings={"application_name": APPLICATION_NAME}
    )
    probe = await asyncpg.connect(
        dsn_of(BENCH_DATABASE), server_settings={"application_name": f"{APPLICATION_NAME}-cpu"}
    )
    try:
        await service.start()
        await service.wait_ready(timeout=120)
        now = int(time.time())

        def bearer(sub: str, roles: list[str], teams: list[str]) -> dict[str, str]:
            token = mint_token(
                secrets["DEALFLOW_JWT_SECRET"], sub=sub, roles=roles, teams=teams, now=now
            )
            return {"Authorization": f"Bearer {token}"}

        as_admin = bearer("bench-admin", ["admin"], [])
        as_manager = bearer("bench-manager", ["manager"], TEAMS[:2])
        pids = {"reporting": service.process.pid, "broker": broker.pid} if service.process else {}
        today = datetime.now(UTC).date()
        runs = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            rates = {
                "rates": [
                    {
                        "from_currency": "EUR",
                        "to_currency": "USD",
                        "effective_from": "2020-01-01",
                        "rate": "1.08",
                    },
                    {
                        "from_currency": "GBP",
                        "to_currency": "USD",
                        "effective_from": "2020-01-01",
                        "rate": "1.27",
                    },
                ]
            }
            async with session.put(
                f"{service.url}/exchange-rates", json=rates, headers=as_admin
            ) as r:
                assert r.status == 200, await r.text()
            reports = {
                "pipeline_admin": ("/pipeline", as_admin),
                "pipeline_manager_two_teams": ("/pipeline", as_manager),
                "forecast_quarter_admin": ("/forecast?period=quarter", as_admin),
                "forecast_quarter_by_owner_manager": (
                    "/forecast?period=quarter&by=owner",
                    as_manager,
                ),
            }
            for number in range(1, args.runs + 1):
                log(f"run {number}: seeding {args.deals} deals with COPY")
                seeding = await seed(db, args.deals, today)
                log(f"seeded: {seeding}")
                sampler = CpuSampler(probe, pids, BENCH_DATABASE)
                await sampler.start()
                await asyncio.sleep(args.settle)
                idle_cpu = await sampler.stop()
                idle = {k: v / sampler.seconds for k, v in idle_cpu.items()}
                run: dict[str, Any] = {"seeding_s": seeding}
                for name, (path, headers) in reports.items():
                    log(f"run {number}: {args.requests} x GET {path} ({name})")
                    run[name] = await measure(
                        session, service.url + path, headers, args.requests, probe, pids, idle
                    )
                    log(f"  latency {run[name]['latency_ms']}")
                runs.append(run)
        median = medians(
            [
                {k: v for k, v in r.items() if k != "seeding_s"} | {"seeding_s": r["seeding_s"]}
                for r in runs
            ]
        )
        p99s = {name: median.get(f"{name}.latency_ms.p99", 1e9) for name in reports}
        return {
            "benchmark": "reporting",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": host_platform.python_version(),
                "postgres": await db.fetchval("SHOW server_version"),
                "broker": "Tansu (embedded, memory storage)",
                "uptime_load_at_end": [round(v, 2) for v in os.getloadavg()],
            },
            "config": {
                "deals": args.deals,
                "requests_per_report": args.requests,
                "runs": args.runs,
                "seeding": "COPY into reporting.deals and deal_owners: 70 % open over four "
                "stages, 15 % won, 15 % lost; USD 70 %, EUR 20 %, GBP 10 %; 40 reps in 8 "
                "teams; expected close over 24 months",
                "requests": "one after another over HTTP/1.1 keep-alive, after 5 warm-ups",
            },
            "median": median,
            "runs": runs,
            "peak_memory_mb": {
                "reporting": peak_rss_mb(service.process.pid) if service.process else None,
                "broker": peak_rss_mb(broker.pid),
            },
            "target": {
                "p99_ms": TARGET_P99_MS,
                "p99_ms_by_report": p99s,
                "met_by_report": {name: p99 < TARGET_P99_MS for name, p99 in p99s.items()},
            },
        }
    finally:
        await service.stop()
        broker.stop()
        await db.close()
        await probe.close()


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="make bench-reporting", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--deals", type=int, default=100_000, help="deals in the read model")
    parser.add_argument("--requests", type=int, default=300, help="requests per report")
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh seed")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds of quiet when idle CPU is measured"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help=f"a PostgreSQL server; the benchmark creates and uses database {BENCH_DATABASE}",
    )
    args = parser.parse_args()
    if args.deals < 1 or args.requests < 1:
        parser.error("at least one deal and one request")
    log_dir = Path("bench/results/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main(args, log_dir))
    keep_report(report, "reporting")


if __name__ == "__main__":
    cli()
