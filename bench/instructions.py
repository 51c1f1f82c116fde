"""The instructions one request of the deal costs its service, counted:
`python -m bench.instructions` (`make bench-instructions`).

Time is a poor ruler on the development machine. The host's speed moves from one hour
to the next (the bench's reference work has taken from 27 to 72 ms), and
`bench.requests`' CPU times move by ±10 % between blocks of one run, so a change of a
per cent or two to the request path cannot be seen, and twenty such changes are what is
left to cut. Valgrind's callgrind counts the instructions a process executes, which do
not depend on the host's speed or on what else runs on it: the same work gives the same
count to a fraction of a per cent. SQLite measures its own speed this way (with
cachegrind) for the same reason.

The opportunity and quote apps run in one process under callgrind as in
`bench.requests`: ASGI calls, no server, broker or relay; the quote service learns of
each deal by its consumer applying `opportunity.created`, and the opportunity service
wins it by its consumer applying `quote.acceptance_requested`. PostgreSQL's side is not
counted (its backends are not under valgrind; `bench.requests` measures their CPU).
Requests run in segments of one kind each (every deal opened, then every deal moved,
...). Before a segment the counters are zeroed and after it they are dumped
(`callgrind_control`), so a segment's count is its requests' and nothing else's, less
what zeroing and dumping cost (a segment of no request, subtracted), and with the
garbage collector's generations emptied before it. Warm-up runs uncounted, and the
garbage collector is then settled as the services settle it. A kind's figure is its
instructions per request, the median over rounds, with the spread over rounds beside
it; the deal's figure adds up its requests as `bench.deals`' deal makes them, and
`the deal and its win` the opportunity's consumer's part of the saga besides.

Counting runs the process about fifty times slower; the figures are instructions, not
time: a change that trades instructions for memory stalls or system calls shows only
in `bench.requests` and `make bench`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench.measure import RESULTS, compare_with_previous, keep_report
from bench.requests import (
    DATABASE,
    LINE,
    TEAM,
    USER,
    Call,
    caller,
    database_url,
    deal_services,
    fresh_database,
    known_deal,
)
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteAcceptanceRequested
from dealflow_common.service import settle_garbage_collector
from dealflow_common.testing import ServiceUnderTest

Request = Callable[[], Awaitable[dict[str, Any]]]
Segment = Callable[[str, Sequence[Request]], Awaitable[list[dict[str, Any]]]]

DEAL_KNOWN = "quote: deal known (event applied)"
DEAL_WON = "opportunity: acceptance applied (deal won)"
DEAL = {
    "opportunity: open": 1,
    "opportunity: stage move": 3,
    DEAL_KNOWN: 1,
    "quote: draft": 2,
    "quote: present": 2,
    "quote: abandon": 1,
    "quote: accept": 1,
}
"""The requests of `bench.deals`' deal (and the event that lets the quote service take
its drafts), by kind: what one deal costs the two services."""
WON = {**DEAL, DEAL_WON: 1}
"""`DEAL` and the opportunity's consumer winning the deal on the quote's acceptance
(counted from 6 December 2026; `the deal` stays comparable with earlier reports)."""

CALIBRATION = "calibration"


async def deal_segments(
    opportunity: Call,
    quote: Call,
    services: tuple[ServiceUnderTest, ServiceUnderTest],
    deals: int,
    segment: Segment,
) -> None:
    """`deals` deals, request kind by request kind, each kind one `segment`;
    `services`: the opportunity and quote services, whose consumers are given events."""
    opportunities, quotes = services
    opening = {
        "title": "Bench deal",
        "customer": {"kind": "organization", "id": "bench", "name": "Bench Corp"},
        "value": {"amount": "1000.00", "currency": "USD"},
        "team_id": TEAM,
    }
    opened = await segment(
        "opportunity: open",
        [functools.partial(opportunity, "POST", "/opportunities", opening)] * deals,
    )
    ids = [answer["id"] for answer in opened]
    for stage in ("qualification", "proposal", "negotiation"):
        await segment(
            "opportunity: stage move",
            [
                functools.partial(
                    opportunity, "POST", f"/opportunities/{deal}/stage", {"stage": stage}
                )
                for deal in ids
            ],
        )
    known = [uuid.UUID(deal) for deal in ids]

    async def made_known(deal: uuid.UUID) -> dict[str, Any]:
        await quotes.consume(known_deal(deal))
        return {}

    await segment(DEAL_KNOWN, [functools.partial(made_known, deal) for deal in known])
    drafts = [{"opportunity_id": str(deal), "lines": [LINE]} for deal in known for _ in range(2)]
    drafted = await segment(
        "quote: draft", [functools.partial(quote, "POST", "/quotes", draft) for draft in drafts]
    )
    chosen, others = [a["id"] for a in drafted[0::2]], [a["id"] for a in drafted[1::2]]
    await segment(
        "quote: present",
        [functools.partial(quote, "POST", f"/quotes/{q}/present", None) for q in chosen + others],
    )
    await segment(
        "quote: abandon",
        [
            functools.partial(
                quote, "POST", f"/quotes/{q}/abandon", {"reason": "customer chose the other"}
            )
            for q in others
        ],
    )
    accepted = await segment(
        "quote: accept",
        [functools.partial(quote, "POST", f"/quotes/{q}/accept", None) for q in chosen],
    )

    async def won(deal: uuid.UUID, answer: dict[str, Any]) -> dict[str, Any]:
        await opportunities.consume(
            QuoteAcceptanceRequested(
                opportunity_id=deal,
                quote_id=uuid.UUID(answer["id"]),
                total=Money.of(answer["total"]["amount"], answer["total"]["currency"]),
                requested_by=USER,
                requested_at=datetime.now(UTC),
                via="api",
            )
        )
        return {}

    await segment(
        DEAL_WON, [functools.partial(won, d, a) for d, a in zip(known, accepted, strict=True)]
    )


async def uncounted(kind: str, requests: Sequence[Request]) -> list[dict[str, Any]]:
    return [await request() for request in requests]


class Callgrind:
    """Zeroes and dumps this process's counters through `callgrind_control`, and
    remembers which dump was which segment."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.segments: list[dict[str, Any]] = []

    def control(self, *command: str) -> None:
        # It waits for the command to be taken: the process is in `waitpid` meanwhile,
        # executing nothing that would be counted.
        subprocess.run(
            ["callgrind_control", *command, str(self.pid)], check=True, capture_output=True
        )

    async def segment(self, kind: str, requests: Sequence[Request]) -> list[dict[str, Any]]:
        label = f"segment-{len(self.segments) + 1}"
        # Each segment starts with the collector's generations empty: a full collection
        # (twelve million instructions) counted in whichever segment it fell would move
        # that kind's figure by a fifth. A segment still pays the young collections its
        # own allocations cause, as a service does.
        gc.collect()
        self.control("--zero")
        answers = [await request() for request in requests]
        self.control(f"--dump={label}")
        self.segments.append({"label": label, "kind": kind, "requests": len(requests)})
        return answers


async def counted(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The process under callgrind: warm up, then count `rounds` rounds of deals; the
    counts go to callgrind's dumps, and which dump was which segment is returned."""
    admin = await fresh_database(args.database_url, args.database)
    await admin.close()
    url = database_url(args.database_url, args.database)
    async with deal_services(url) as (opportunities, quotes):
        opportunity, quote = caller(opportunities.app), caller(quotes.app)
        services = (opportunities, quotes)
        await deal_segments(opportunity, quote, services, args.warmup, uncounted)
        settle_garbage_collector()
        counter = Callgrind()
        counter.control("--instr=on")
        for _ in range(args.rounds):
            await counter.segment(CALIBRATION, [])
            await deal_segments(opportunity, quote, services, args.deals, counter.segment)
    return counter.segments


@dataclass(frozen=True)
class Dump:
    label: str
    instructions: int


def read_dump(text: str) -> Dump:
    """The trigger's label and the instructions counted of one callgrind dump."""
    label = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
    total = re.search(r"^summary: (\d+)", text, re.M)
    if label is None or total is None:
        raise ValueError("not a callgrind dump with a trigger and a summary")
    return Dump(label.group(1), int(total.group(1)))


def instructions_by_kind(
    segments: Sequence[dict[str, Any]], dumps: dict[str, int], rounds: int
) -> dict[str, list[float]]:
    """Instructions per request of each kind, round by round: the kind's segments of a
    round added up, less the calibration segment's count for each, over their requests.
    Segments come in rounds, each opened by a calibration."""
    per_round: list[dict[str, list[int]]] = []
    for segment in segments:
        if segment["kind"] == CALIBRATION:
            per_round.append({})
            calibration = dumps[segment["label"]]
            continue
        counted = dumps[segment["label"]] - calibration
        spent = per_round[-1].setdefault(segment["kind"], [0, 0])
        spent[0] += counted
        spent[1] += segment["requests"]
    if len(per_round) != rounds:
        raise ValueError(f"{len(per_round)} rounds counted, {rounds} asked for")
    by_kind: dict[str, list[float]] = {}
    for kinds in per_round:
        for kind, (instructions, requests) in kinds.items():
            by_kind.setdefault(kind, []).append(instructions / requests)
    return by_kind


def report_of(by_kind: dict[str, list[float]], args: argparse.Namespace) -> dict[str, Any]:
    medians = {kind: round(statistics.median(values)) for kind, values in by_kind.items()}
    requests: dict[str, dict[str, Any]] = {
        kind: {
            "instructions_median": medians[kind],
            "instructions_by_round": [round(v) for v in values],
            "spread_pct": round((max(values) - min(values)) / statistics.median(values) * 100, 2),
        }
        for kind, values in by_kind.items()
    }
    deal = sum(medians[kind] * count for kind, count in DEAL.items())
    deal_won = sum(medians[kind] * count for kind, count in WON.items())
    return {
        "benchmark": "instructions",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "valgrind": valgrind_version(),
        "rounds": args.rounds,
        "deals_per_round": args.deals,
        "requests": requests,
        "deal_instructions": deal,
        "deal_won_instructions": deal_won,
        "median": {
            **{kind: figures["instructions_median"] for kind, figures in requests.items()},
            "the deal": deal,
            "the deal and its win": deal_won,
        },
    }


def valgrind_version() -> str:
    return subprocess.run(
        ["valgrind", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def count(args: argparse.Namespace) -> dict[str, Any]:
    """Run the counted process under callgrind and read what it counted."""
    with tempfile.TemporaryDirectory(prefix="dealflow-instructions-") as scratch:
        if args.keep_dumps:
            scratch = args.keep_dumps
            Path(scratch).mkdir(parents=True, exist_ok=True)
        out, segments = Path(scratch) / "callgrind.out", Path(scratch) / "segments.json"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            "--counted",
            f"--segments={segments}",
            f"--database-url={args.database_url}",
            f"--database={args.database}",
            f"--rounds={args.rounds}",
            f"--deals={args.deals}",
            f"--warmup={args.warmup}",
        ]
        # The same hash seed every run: a set's or dict's order may change the work.
        environment = {**os.environ, "PYTHONHASHSEED": "0"}
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f"the counted process failed:\n{finished.stderr[-3000:]}")
        dumps = {
            dump.label: dump.instructions
            for path in sorted(Path(scratch).glob("callgrind.out.*"))
            for dump in [read_dump(path.read_text(errors="replace"))]
        }
        by_kind = instructions_by_kind(json.loads(segments.read_text()), dumps, args.rounds)
    return report_of(by_kind, args)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default=DATABASE, help="created afresh on that server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deals", type=int, default=30, help="deals per round")
    parser.add_argument("--warmup", type=int, default=30, help="deals before counting")
    parser.add_argument(
        "--keep-dumps",
        metavar="FOLDER",
        help="keep callgrind's dumps there, one a segment, for callgrind_annotate "
        "(segments.json says which is which)",
    )
    parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--segments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.counted:
        Path(args.segments).write_text(json.dumps(uvloop.run(counted(args))))
        return
    report = count(args)
    written = keep_report(report, "instructions")
    figures = {kind: f"instructions per request: {kind}" for kind in report["median"]}
    for line in compare_with_previous(RESULTS, written, "instructions-*.json", figures):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    cli()
