"""`python -m bench.instructions`: each request of the deal counted under callgrind, the
cost of counting taken out."""

from __future__ import annotations

from argparse import Namespace

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bench import instructions
from bench.instructions import CALIBRATION, DEAL, WON, instructions_by_kind, read_dump

DATABASE = "dealflow_bench_instructions_test"

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 7462
cmd:  /usr/bin/python3 -m bench.instructions --counted
part: 2

desc: I1 cache:
desc: Timerange: Basic block 9021 - 9350
desc: Trigger: dump segment-7

positions: line
events: Ir
summary: 37508301

fn=(1) main
0 12
totals: 37516413
"""


def test_a_dump_gives_its_label_and_its_summary() -> None:
    assert read_dump(DUMP) == instructions.Dump("segment-7", 37508301)


def test_a_file_that_is_not_a_dump_is_refused() -> None:
    with pytest.raises(ValueError, match="not a callgrind dump"):
        read_dump("events: Ir\n")


def test_each_kind_is_its_segments_of_a_round_less_the_calibration_over_their_requests() -> None:
    segments = [
        {"label": "s1", "kind": CALIBRATION, "requests": 0},
        {"label": "s2", "kind": "move", "requests": 2},
        {"label": "s3", "kind": "move", "requests": 2},
        {"label": "s4", "kind": "open", "requests": 4},
        {"label": "s5", "kind": CALIBRATION, "requests": 0},
        {"label": "s6", "kind": "move", "requests": 2},
        {"label": "s7", "kind": "move", "requests": 2},
        {"label": "s8", "kind": "open", "requests": 4},
    ]
    dumps = {"s1": 100, "s2": 2100, "s3": 2300, "s4": 4100}
    dumps |= {"s5": 200, "s6": 2200, "s7": 2200, "s8": 4600}

    assert instructions_by_kind(segments, dumps, rounds=2) == {
        "move": [(2000 + 2200) / 4, (2000 + 2000) / 4],
        "open": [4000 / 4, 4400 / 4],
    }


def test_a_round_missing_is_an_error_not_a_smaller_median() -> None:
    segments = [{"label": "s1", "kind": CALIBRATION, "requests": 0}]
    with pytest.raises(ValueError, match="1 rounds counted, 2 asked for"):
        instructions_by_kind(segments, {"s1": 5}, rounds=2)


async def test_every_request_of_the_deal_is_counted_under_callgrind(database_url: str) -> None:
    """The whole harness, small: valgrind runs the two apps, and each kind's count is a
    request's work (hundreds of thousands of instructions at least), the same from one
    round to the next to within a few per cent."""
    args = Namespace(
        database_url=database_url, database=DATABASE, rounds=2, deals=2, warmup=2, keep_dumps=None
    )
    try:
        report = instructions.count(args)
    finally:
        server = make_url(database_url).set(drivername="postgresql", database="postgres")
        admin = await asyncpg.connect(str(server))
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.close()

    assert set(report["requests"]) == set(WON)
    for kind, figures in report["requests"].items():
        assert len(figures["instructions_by_round"]) == 2, kind
        assert figures["instructions_median"] > 200_000, kind
        assert figures["spread_pct"] < 5, kind
    for total, kinds in (("the deal", DEAL), ("the deal and its win", WON)):
        assert report["median"][total] == sum(
            report["requests"][kind]["instructions_median"] * n for kind, n in kinds.items()
        )
