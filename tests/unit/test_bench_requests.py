"""`python -m bench.requests`: every request of the deal is measured, block by block."""

from __future__ import annotations

from argparse import Namespace

import asyncpg
from sqlalchemy.engine import make_url

from bench import requests

DATABASE = "dealflow_bench_requests_test"


async def test_each_request_of_the_deal_is_measured_in_every_block(database_url: str) -> None:
    args = Namespace(
        database_url=database_url, database=DATABASE, blocks=2, deals_per_block=1, warmup=1
    )
    try:
        report = await requests.main(args)
    finally:
        server = make_url(database_url).set(drivername="postgresql", database="postgres")
        admin = await asyncpg.connect(str(server))
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.close()

    assert set(report["requests"]) == {
        "opportunity: open",
        "opportunity: stage move",
        "opportunity: read",
        "quote: draft",
        "quote: present",
        "quote: abandon",
        "quote: accept",
    }
    for kind, figures in report["requests"].items():
        assert len(figures["cpu_us_by_block"]) == 2
        assert all(spent > 0 for spent in figures["cpu_us_by_block"])
        # Every request sends at least one statement: its service's backend ran for it.
        assert len(figures["db_cpu_us_by_block"]) == 2
        assert all(spent > 0 for spent in figures["db_cpu_us_by_block"]), kind
        assert report["median"][f"{kind}, PostgreSQL"] == figures["db_cpu_us_median"]
