"""`dealflow-reporting`: the reporting service's operators' command line.

    dealflow-reporting rebuild     # clear the read model and replay the events from offset 0

It reads the service's settings from the environment (DATABASE_URL,
KAFKA_BOOTSTRAP_SERVERS, DEALFLOW_DATABASE_SCHEMA, ...), as the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from dealflow_common.logs import configure_logging
from dealflow_common.service import load_settings
from dealflow_reporting.bootstrap import ReportingSettings, rebuild


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dealflow-reporting")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "rebuild",
        help="clear the read model and apply every event again from offset 0; the figures "
        "are partial until it ends",
    )
    args = parser.parse_args(argv)
    settings = load_settings(ReportingSettings)
    configure_logging(settings.service_name, settings.log_level, "text")
    if args.command == "rebuild":
        started = time.monotonic()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 1 or done == total:
                last[0] = now
                print(f"replayed {done} of {total} records", file=sys.stderr)

        summary = asyncio.run(rebuild(settings, progress))
        print(
            f"rebuilt the read model from {summary.records} records of "
            f"{summary.partitions} partitions in {time.monotonic() - started:.1f}s"
        )


if __name__ == "__main__":
    main()
