"""`make chaos`: deals through the real services, broker and database, one fault at a time.

Starts Tansu behind a TCP proxy and every service as its own process on a fresh
PostgreSQL database (`dealflow_chaos`), then for each fault runs a bounded batch of
deals while injecting it, waits for the system to settle and checks the invariants
(chaos/invariants.py). Prints a table on stdout and writes it as JSON to chaos/results/;
exits 1 when any row lost an event, left something stuck or broke an invariant.

    make chaos                                 # every fault, full size
    make chaos CHAOS_ARGS=--short              # every fault, smaller and shorter (CI)
    make chaos CHAOS_ARGS="--only kill-quote"  # the baseline and one fault
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from chaos import report
from chaos.faults import Profile, all_faults
from chaos.invariants import listed
from chaos.session import Session
from chaos.stack import Stack, progress


def parse_args() -> argparse.Namespace:
    names = [f.name for f in all_faults(Profile.of(False))]
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer deals, shorter outages (CI)")
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help="run only this fault (after the baseline); repeatable. One of: " + ", ".join(names),
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server; the run drops and creates database dealflow_chaos in it",
    )
    return parser.parse_args()


def code_version() -> str:
    """The commit the services ran, and whether the working tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


async def run(args: argparse.Namespace, log_dir: Path) -> int:
    # Ctrl-C or SIGTERM cancels this task once; its teardown then runs to the end.
    current = asyncio.current_task()
    assert current is not None
    stopping: list[int] = []

    def stop(signum: int) -> None:
        if not stopping:
            progress("stopping: every process started is being stopped")
            current.cancel()
        stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop, signum)

    profile = Profile.of(args.short)
    faults = all_faults(profile)
    if args.only:
        faults = [f for f in faults if f.name == "baseline" or f.name in args.only]
    seed = args.seed if args.seed is not None else int(time.time())
    version = code_version()
    progress(f"code {version}, seed {seed}")
    stack = Stack(args.database_url, log_dir)
    session = Session(stack, profile, random.Random(seed))
    started = time.monotonic()
    try:
        rows = await session.run(faults)
    finally:
        await stack.stop()
        progress("stack stopped")
    elapsed = time.monotonic() - started

    print(report.table(rows))
    print(report.details(rows))
    holes = report.offset_holes(log_dir, report.READ_AGAIN)
    gone_past = report.offset_holes(log_dir, report.GONE_PAST)
    if holes:
        print(f"\nreads that skipped offsets ({len(holes)}), each read again:")
        print("\n".join(listed(holes)))
    if gone_past:
        print(f"\nholes the broker kept on a second read ({len(gone_past)}), gone past:")
        print("\n".join(listed(gone_past)))
    failed = [row.fault for row in rows if row.failed]
    if session.aborted:
        failed.append(f"aborted at {session.aborted}")
    path = report.write_json(
        report.to_json(
            rows,
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "profile": "short" if args.short else "full",
                "seed": seed,
                "code": version,
                "seconds": round(elapsed, 1),
                "service_logs": str(log_dir),
                "offset_holes": {"read_again": holes, "gone_past": gone_past},
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "failed": failed,
            },
        )
    )
    print(
        f"\n{len(rows)} rows in {elapsed:.0f}s (seed {seed}); "
        + (f"FAILED: {', '.join(failed)}" if failed else "every invariant held")
        + f"\nreport: {path}\nservice logs: {log_dir}"
    )
    return 1 if failed else 0


def main() -> int:
    args = parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="dealflow-chaos-"))
    progress(f"service logs: {log_dir}")
    try:
        return asyncio.run(run(args, log_dir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"\ninterrupted; everything started was stopped. Logs: {log_dir}", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as error:  # the stack could not start
        print(f"\nchaos run could not run: {error}\nservice logs: {log_dir}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
