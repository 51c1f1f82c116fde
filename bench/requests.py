"""The CPU one request costs its service, measured in-process: `python -m bench.requests`.

`make bench` measures the whole system, where every process shares two cores and the
host's speed moves by a third between identical runs. A change to the request path of
a few per cent does not show there. Here the opportunity and quote apps run in this
process on a real PostgreSQL (each its own schema, migrated), called as ASGI apps with
no server, broker or relay between: the figure is this process's CPU per request, the
app's own work and its database client, and beside it (", PostgreSQL") what the
service's database backends ran meanwhile, from the scheduler's own count of each
backend's time on a CPU. The deal's requests are the benchmark's: open a deal, move it,
read it; draft a quote, present, abandon and accept.

Kinds are measured in alternating blocks, so a drift of the machine's speed lands on
every kind alike, and each figure is the median over the blocks. Comparing two builds
means running each on the same machine, one after the other, more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import uvloop
from sqlalchemy.engine import make_url

from bench.measure import RESULTS, compare_with_previous, keep_report, on_cpu_seconds
from dealflow_common.auth import mint_token
from dealflow_common.contracts.opportunity import OpportunityCreated
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, QUOTE_EVENTS
from dealflow_common.testing import (
    ServiceUnderTest,
    deal_state,
    service_under_test,
    settings_for,
)
from dealflow_opportunity.bootstrap import MIGRATIONS as OPPORTUNITY_MIGRATIONS
from dealflow_opportunity.bootstrap import OpportunitySettings
from dealflow_opportunity.bootstrap import build_app as build_opportunity_app
from dealflow_quote.bootstrap import MIGRATIONS as QUOTE_MIGRATIONS
from dealflow_quote.bootstrap import QuoteSettings
from dealflow_quote.bootstrap import build_app as build_quote_app

DATABASE = "dealflow_bench_requests"
SECRET = uuid.uuid4().hex * 2
USER, TEAM = "bench", "bench"
LINE = {
    "description": "Seat",
    "quantity": "1",
    "unit_price": {"amount": "1000.00", "currency": "USD"},
}

Call = Callable[[str, str, Any], Awaitable[dict[str, Any]]]


def bench_token(*_: Any, **__: Any) -> str:
    """A token of the bench's rep, who owns every deal it opens."""
    now = int(time.time())
    return mint_token(SECRET, sub=USER, roles=["rep", "manager"], teams=[TEAM], now=now)


def caller(app: Any) -> Call:
    """`call(method, path, body)` straight into the ASGI app; the answer's JSON. A status
    of 300 or more raises: a refused request would measure the refusal."""
    token = mint_token(
        SECRET, sub=USER, roles=["rep", "manager"], teams=[TEAM], now=int(time.time())
    )
    authorization = f"Bearer {token}".encode()

    async def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
        raw = orjson.dumps(body) if body is not None else b""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"service"),
                (b"authorization", authorization),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app asks again only to learn of a disconnect: there is none
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await app(scope, receive, send)
        if answer["status"] >= 300:
            raise RuntimeError(f"{method} {path} -> {answer['status']}: {answer['body']!r}")
        return dict(orjson.loads(answer["body"])) if answer["body"] else {}

    return call


def known_deal(opportunity_id: uuid.UUID) -> OpportunityCreated:
    """The `opportunity.created` that makes one of the bench's deals known to the quote
    service."""
    state = deal_state(opportunity_id, owners=[USER], team_id=TEAM, created_by=USER)
    return OpportunityCreated(opportunity_id=opportunity_id, opportunity=state)


class Backends:
    """The CPU each service's PostgreSQL backends (its pool's connections, known by their
    application name) have run, for the share of a request the database spends: it runs
    on this machine too, and a statement saved is saved on both sides."""

    def __init__(self, admin: asyncpg.Connection, database: str) -> None:
        self._admin = admin
        self._database = database
        self._pids: dict[str, list[int]] = {}

    async def refresh(self) -> None:
        """Find the backends again: a pool opens its connections as it needs them."""
        rows = await self._admin.fetch(
            "SELECT pid, application_name FROM pg_stat_activity "
            "WHERE datname = $1 AND backend_type = 'client backend'",
            self._database,
        )
        self._pids = {}
        for row in rows:
            service = str(row["application_name"]).removeprefix("dealflow-")
            self._pids.setdefault(service, []).append(row["pid"])

    def seconds(self, service: str) -> float:
        return sum(on_cpu_seconds(pid) for pid in self._pids.get(service, ()))


class Timings:
    """CPU seconds per request kind, block by block: this process's, and, given
    `backends`, the PostgreSQL backends' of the kind's service ("opportunity: open" is
    the opportunity service's)."""

    def __init__(self, backends: Backends | None = None) -> None:
        self.blocks: dict[str, list[float]] = {}
        self.database_blocks: dict[str, list[float]] = {}
        self._backends = backends
        self._block: dict[str, list[float]] = {}
        self._database_block: dict[str, list[float]] = {}

    async def timed(self, kind: str, request: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        service = kind.split(":", 1)[0]
        backends = self._backends
        database_started = backends.seconds(service) if backends else 0.0
        started = time.process_time()
        answer = await request
        self._block.setdefault(kind, []).append(time.process_time() - started)
        if backends is not None:
            spent = backends.seconds(service) - database_started
            self._database_block.setdefault(kind, []).append(spent)
        return answer

    def end_block(self) -> None:
        for into, block in (
            (self.blocks, self._block),
            (self.database_blocks, self._database_block),
        ):
            for kind, spent in block.items():
                into.setdefault(kind, []).append(sum(spent) / len(spent))
        self._block, self._database_block = {}, {}

    def report(self) -> dict[str, dict[str, Any]]:
        report: dict[str, dict[str, Any]] = {}
        for kind, values in self.blocks.items():
            report[kind] = {
                "cpu_us_median": round(statistics.median(values) * 1e6),
                "cpu_us_by_block": [round(v * 1e6) for v in values],
            }
            database = self.database_blocks.get(kind)
            if database:
                report[kind]["db_cpu_us_median"] = round(statistics.median(database) * 1e6)
                report[kind]["db_cpu_us_by_block"] = [round(v * 1e6) for v in database]
        return report


async def opportunity_block(call: Call, timings: Timings, deals: int) -> None:
    for _ in range(deals):
        body = {
            "title": "Bench deal",
            "customer": {"kind": "organization", "id": "bench", "name": "Bench Corp"},
            "value": {"amount": "1000.00", "currency": "USD"},
            "team_id": TEAM,
        }
        deal = (await timings.timed("opportunity: open", call("POST", "/opportunities", body)))[
            "id"
        ]
        for stage in ("qualification", "proposal", "negotiation"):
            move = call("POST", f"/opportunities/{deal}/stage", {"stage": stage})
            await timings.timed("opportunity: stage move", move)
        await timings.timed("opportunity: read", call("GET", f"/opportunities/{deal}", None))


async def quote_block(call: Call, quotes: ServiceUnderTest, timings: Timings, deals: int) -> None:
    for _ in range(deals):
        deal = uuid.uuid4()
        await quotes.consume(known_deal(deal))
        chosen, other = [
            (await timings.timed("quote: draft", call("POST", "/quotes", draft)))["id"]
            for draft in ({"opportunity_id": str(deal), "lines": [LINE]},) * 2
        ]
        for quote in (chosen, other):
            await timings.timed("quote: present", call("POST", f"/quotes/{quote}/present", None))
        abandon = call("POST", f"/quotes/{other}/abandon", {"reason": "customer chose the other"})
        await timings.timed("quote: abandon", abandon)
        await timings.timed("quote: accept", call("POST", f"/quotes/{chosen}/accept", None))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    admin = await fresh_database(args.database_url, args.database)
    try:
        return await _measure(args, admin)
    finally:
        await admin.close()


async def fresh_database(server_url: str, database: str) -> asyncpg.Connection:
    """`database` dropped and created anew on the server of `server_url`; an admin
    connection to that server, for the caller to close."""
    server = make_url(server_url).set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(str(server))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {database}")
    except BaseException:
        await admin.close()
        raise
    return admin


@contextlib.asynccontextmanager
async def deal_services(url: str) -> AsyncIterator[tuple[ServiceUnderTest, ServiceUnderTest]]:
    """The opportunity and quote apps of the deal, each on its own schema of `url`'s
    database, migrated: (opportunities, quotes)."""
    async with (
        service_under_test(
            ServiceUnderTest,
            settings_for(OpportunitySettings, url, SECRET, database_schema="opportunity"),
            build_opportunity_app,
            OPPORTUNITY_MIGRATIONS,
            bench_token,
            [OPPORTUNITY_EVENTS],
        ) as opportunities,
        service_under_test(
            ServiceUnderTest,
            settings_for(QuoteSettings, url, SECRET, database_schema="quote"),
            build_quote_app,
            QUOTE_MIGRATIONS,
            bench_token,
            [QUOTE_EVENTS],
        ) as quotes,
    ):
        yield opportunities, quotes


def database_url(server_url: str, database: str) -> str:
    """The asyncpg URL of `database` on the server of `server_url`."""
    return str(make_url(server_url).set(drivername="postgresql+asyncpg", database=database))


async def _measure(args: argparse.Namespace, admin: asyncpg.Connection) -> dict[str, Any]:
    backends = Backends(admin, args.database)
    timings = Timings(backends)
    async with deal_services(database_url(args.database_url, args.database)) as (
        opportunities,
        quotes,
    ):
        opportunity_call = caller(opportunities.app)
        quote_call = caller(quotes.app)
        warm = Timings()
        await opportunity_block(opportunity_call, warm, args.warmup)
        await quote_block(quote_call, quotes, warm, args.warmup)
        for _ in range(args.blocks):
            await backends.refresh()
            await opportunity_block(opportunity_call, timings, args.deals_per_block)
            await quote_block(quote_call, quotes, timings, args.deals_per_block)
            timings.end_block()
    measured = timings.report()
    return {
        "benchmark": "requests",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "blocks": args.blocks,
        "deals_per_block": args.deals_per_block,
        "requests": measured,
        # As the other reports keep their figures, for the comparison with the last one.
        "median": {
            **{kind: figures["cpu_us_median"] for kind, figures in measured.items()},
            **{
                f"{kind}, PostgreSQL": figures["db_cpu_us_median"]
                for kind, figures in measured.items()
                if "db_cpu_us_median" in figures
            },
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default=DATABASE, help="created afresh on that server")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--deals-per-block", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=40, help="deals before measuring")
    report = uvloop.run(main(parser.parse_args()))
    written = keep_report(report, "requests")
    figures = {kind: f"CPU µs per request: {kind}" for kind in report["median"]}
    for line in compare_with_previous(RESULTS, written, "requests-*.json", figures):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    cli()
