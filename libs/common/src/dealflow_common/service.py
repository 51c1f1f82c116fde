"""The command line of every service: `serve` (default) and `migrate`.

python -m dealflow_opportunity            # serve the API, consumers and relay
python -m dealflow_opportunity migrate    # bring the schema to the newest version
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from dealflow_common.http.server import HttpProtocol
from dealflow_common.logs import configure_logging
from dealflow_common.messaging.aiokafka_uvloop import tolerate_closed_connections
from dealflow_common.migrations import run_migrations
from dealflow_common.settings import ProcessSettings, ServiceSettings
from dealflow_common.telemetry import configure_tracing, shutdown_tracing

S = TypeVar("S", bound=ServiceSettings)
P = TypeVar("P", bound=ProcessSettings)

log = logging.getLogger(__name__)


def load_settings(settings_class: type[P]) -> P:
    """Read settings from the environment, or exit with what is missing."""
    try:
        return settings_class()
    except ValidationError as error:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        print(f"cannot start: invalid configuration\n{problems}", file=sys.stderr)
        raise SystemExit(2) from None


def run_service(
    settings: S,
    build_app: Callable[[S], FastAPI],
    migrations: Path,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"dealflow-{settings.service_name}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    parser.add_argument("--migrate", action="store_true", help="migrate the schema before serving")
    args = parser.parse_args(argv)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    if args.command == "migrate" or args.migrate:
        run_migrations(settings, migrations)
        log.info("database schema is at the newest version")
        if args.command == "migrate":
            return

    serve(settings, build_app)


def serve(
    settings: P, build_app: Callable[[P], FastAPI], *, graceful_shutdown_seconds: int = 10
) -> None:
    """Serve a process's HTTP app until stopped, traced when tracing is configured."""
    configure_tracing(settings.service_name)
    try:
        _serve(build_app(settings), settings, graceful_shutdown_seconds)
    finally:
        shutdown_tracing()


def _serve(app: FastAPI, settings: ProcessSettings, graceful_shutdown_seconds: int) -> None:
    tolerate_closed_connections()
    settle_garbage_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # A response's head and body leave in one send (`http.server`).
        http=HttpProtocol,
        # uvloop: about 5 % less CPU per deal than asyncio's loop, every service
        # (docs/performance.md, issue 13's twelfth round). It raises where asyncio's
        # loop drops a write to a closed connection, which aiokafka does not expect
        # (`aiokafka_uvloop`, applied first).
        loop="uvloop",
        timeout_graceful_shutdown=graceful_shutdown_seconds,
    )


def settle_garbage_collector() -> None:
    """What the process built to start (modules, the app, compiled statements) lives as
    long as the process: freeze it out of the collector's scans. A request or an event
    allocates many short-lived objects (rows, models, dicts), so the youngest generation
    is collected less often, in larger runs; cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, older, oldest)


_YOUNG_GC_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (CPython's default: 700)."""
