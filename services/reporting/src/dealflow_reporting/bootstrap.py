"""Composition root of the reporting service.

The only place that reads settings and builds the engine, the consumer of opportunity
events, the forecast snapshot schedule, the rebuild and the app.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.currencies import MINOR_UNITS
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.http.app import create_app
from dealflow_common.messaging.consumer import ConsumerMetrics, EventConsumer
from dealflow_common.messaging.replay import Progress, ReplaySummary
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_reporting.adapters.reports import ReportReader
from dealflow_reporting.api.routes import exchange_rate_routes, reporting_routes
from dealflow_reporting.application import projection
from dealflow_reporting.application.rebuild import rebuild_read_model
from dealflow_reporting.application.reports import Reports, snapshot_slot
from dealflow_reporting.application.unit_of_work import ReportingUnitOfWork

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "Pipeline, forecast and analytics over a read model built only from "
    "dealflow.opportunity.events, rebuilt from offset 0 by `dealflow-reporting rebuild`; "
    "exchange rates maintained by admins; forecast snapshots on a schedule. Publishes "
    "nothing; consumes dealflow.opportunity.events."
)
TOPICS = (OPPORTUNITY_EVENTS,)


class ReportingSettings(ServiceSettings):
    service_name: ClassVar[str] = "reporting"
    port: int = Field(default=8006, ge=1, le=65535)
    reporting_currency: str = Field(
        default="USD",
        description="The currency reports are in when the request names none (ISO 4217)",
    )
    forecast_snapshot_interval_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description="How often the forecast is snapshotted (one snapshot per interval, "
        "however many replicas run)",
    )

    @field_validator("reporting_currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        if code not in MINOR_UNITS:
            raise ValueError(f"unknown ISO 4217 currency code {code!r}")
        return code


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    return asyncapi_document(
        service="reporting",
        version=VERSION,
        description=DESCRIPTION,
        publishes=[],
        consumes=projection.HANDLERS,
    )


def build_app(settings: ReportingSettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=[])

    def unit_of_work() -> ReportingUnitOfWork:
        return ReportingUnitOfWork(platform.engine, platform.outbox, platform.clock)

    platform.add_consumer(
        group_id=projection.CONSUMER_GROUP,
        topics=TOPICS,
        handlers=projection.HANDLERS,
        unit_of_work=unit_of_work,
        background=True,
        before_batch=projection.lock_ahead,
    )
    reports = Reports(
        platform.engine, ReportReader(platform.engine), platform.clock, settings.reporting_currency
    )
    every = settings.forecast_snapshot_interval_seconds

    async def snapshot_forecast() -> None:
        taken = await reports.take_snapshot(snapshot_slot(platform.clock(), every))
        if taken is not None:
            log.info("forecast snapshot %s taken", taken)

    platform.scheduler.add_job(
        snapshot_forecast,
        "interval",
        seconds=min(every, 60.0),  # looks each minute whether the slot's snapshot exists
        id="forecast-snapshot",
        max_instances=1,
        coalesce=True,
        # The first look soon after start, so a fresh deployment has a snapshot today.
        next_run_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    return create_app(
        platform,
        title="Dealflow reporting service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[reporting_routes(reports), exchange_rate_routes(reports)],
        asyncapi=asyncapi(),
    )


async def rebuild(
    settings: ReportingSettings,
    progress: Progress | None = None,
    topics: Iterable[str] = TOPICS,
) -> ReplaySummary:
    """`dealflow-reporting rebuild`: the read model cleared and replayed from offset 0.

    Records that cannot be applied were dead-lettered by the live consumer already; the
    replay logs them and does not send them a second time."""
    platform = build_platform(settings, publishes=[])

    async def logged_only(
        topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        log.warning("replay skips a record the live consumer dead-lettered (%s)", topic)

    consumer: EventConsumer[ReportingUnitOfWork] = EventConsumer(
        group_id=projection.CONSUMER_GROUP,
        topics=tuple(topics),
        handlers=projection.HANDLERS,
        unit_of_work=lambda: ReportingUnitOfWork(platform.engine, platform.outbox, platform.clock),
        send_dead_letter=logged_only,
        clock=platform.clock,
        max_attempts=settings.consumer_max_attempts,
        retry_backoff=settings.consumer_retry_backoff_ms / 1000,
        metrics=ConsumerMetrics(CollectorRegistry()),
        infrastructure_answers=platform.database_answers,
        before_batch=projection.lock_ahead,
    )
    try:
        return await rebuild_read_model(platform.engine, consumer, settings, topics, progress)
    finally:
        await platform.engine.dispose()


def main() -> None:
    run_service(load_settings(ReportingSettings), build_app, MIGRATIONS)
