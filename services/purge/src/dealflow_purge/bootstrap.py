"""Composition root of the purge service.

The only place that reads settings and builds the engine, the broker, the consumer of
opportunity and quote events, the agent's schedule and the app.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field
from sqlalchemy.engine import make_url

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import (
    OPPORTUNITY_COMMANDS,
    OPPORTUNITY_EVENTS,
    PURGE_EVENTS,
    QUOTE_COMMANDS,
    QUOTE_EVENTS,
)
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_purge.adapters.journal import JournalDirectory
from dealflow_purge.adapters.schedule import CrontabSchedule
from dealflow_purge.api.routes import background_launcher, purge_routes
from dealflow_purge.application import projection
from dealflow_purge.application.agent import AgentConfig, PurgeAgent
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.application.unit_of_work import PurgeUnitOfWork
from dealflow_purge.domain.progress import Backoff

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "The purge agent: closed deals past their retention are purged, quotes first, then "
    "the opportunity, on a schedule or on demand. Publishes on dealflow.purge.events and "
    "the quote and opportunity command topics; consumes dealflow.opportunity.events and "
    "dealflow.quote.events."
)
PUBLISHES = [PURGE_EVENTS, QUOTE_COMMANDS, OPPORTUNITY_COMMANDS]


class PurgeSettings(ServiceSettings):
    service_name: ClassVar[str] = "purge"
    port: int = Field(default=8005, ge=1, le=65535)
    purge_tick_seconds: float = Field(
        default=15.0, gt=0, description="How often the agent looks whether a run is due"
    )
    purge_lease_seconds: int = Field(
        default=60,
        ge=5,
        description="How long a run holds the agent's lock without renewing it; past it a "
        "stopped run is taken over by the next",
    )
    purge_answer_timeout_seconds: int = Field(
        default=120,
        ge=1,
        description="How long a deal waits for the quote or opportunity service to answer "
        "a purge request before the step counts as failed (and is retried)",
    )
    purge_retry_backoff_seconds: int = Field(
        default=60, ge=1, description="Wait before the first retry of a failed deal; doubles"
    )
    purge_retry_backoff_max_seconds: int = Field(
        default=3600, ge=1, description="Longest wait between retries of a failed deal"
    )
    purge_poll_interval_ms: int = Field(
        default=500, ge=10, description="How often a run checks its batch's progress"
    )
    purge_max_batch_size: int = Field(
        default=1000, ge=1, description="The largest batch_size a policy may set"
    )
    purge_journal_dir: Path | None = Field(
        default=None,
        description="Where runs write their journals (purge-run-<run id>.jsonl) when the "
        "policy's journal flag is on. Unset: purge-journal/ next to the SQLite file, or "
        "dealflow-purge-journal/ in the system's temporary directory",
    )


def journal_directory(settings: PurgeSettings) -> Path:
    if settings.purge_journal_dir is not None:
        return settings.purge_journal_dir
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "purge-journal"
    return Path(tempfile.gettempdir()) / "dealflow-purge-journal"


def agent_config(settings: PurgeSettings) -> AgentConfig:
    return AgentConfig(
        lease=timedelta(seconds=settings.purge_lease_seconds),
        answer_within=timedelta(seconds=settings.purge_answer_timeout_seconds),
        backoff=Backoff(
            timedelta(seconds=settings.purge_retry_backoff_seconds),
            timedelta(seconds=settings.purge_retry_backoff_max_seconds),
        ),
        poll_interval=settings.purge_poll_interval_ms / 1000,
        max_batch_size=settings.purge_max_batch_size,
    )


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    from prometheus_client import CollectorRegistry

    config = AgentConfig(timedelta(1), timedelta(1), Backoff(timedelta(1), timedelta(1)), 1, 1)
    return asyncapi_document(
        service="purge",
        version=VERSION,
        description=DESCRIPTION,
        publishes=PUBLISHES,
        consumes=projection.handlers(config, PurgeMetrics(CollectorRegistry())),
    )


def build_app(settings: PurgeSettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=PUBLISHES)

    def unit_of_work() -> PurgeUnitOfWork:
        return PurgeUnitOfWork(platform.engine, platform.outbox, platform.clock)

    config = agent_config(settings)
    metrics = PurgeMetrics(platform.registry)
    cron = CrontabSchedule()
    journal = JournalDirectory(journal_directory(settings))
    agent = PurgeAgent(unit_of_work, cron, config, metrics, journal)
    platform.add_consumer(
        group_id="purge-service",
        topics=[OPPORTUNITY_EVENTS, QUOTE_EVENTS],
        handlers=projection.handlers(config, metrics),
        unit_of_work=unit_of_work,
        background=True,
        before_batch=projection.lock_ahead,
        changes_nothing=projection.changes_nothing,
    )
    platform.scheduler.add_job(
        agent.tick,
        "interval",
        seconds=settings.purge_tick_seconds,
        id="purge-tick",
        max_instances=1,
        coalesce=True,
    )
    return create_app(
        platform,
        title="Dealflow purge service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[
            purge_routes(
                platform.engine,
                unit_of_work,
                agent,
                cron,
                metrics,
                platform.clock,
                background_launcher(agent),
            )
        ],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(PurgeSettings), build_app, MIGRATIONS)
