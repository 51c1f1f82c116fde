"""Composition root of the sequence service.

The only place that reads settings and builds the engine, the broker, the consumer of
opportunity events, the due-step and stale-deal schedules and the app.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, SEQUENCE_EVENTS
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_sequence.adapters.repository import DefinitionCache
from dealflow_sequence.api.routes import enrollment_routes, sequence_routes, task_routes
from dealflow_sequence.application import handlers
from dealflow_sequence.application.queries import SequenceReader
from dealflow_sequence.application.scheduler import report_stale_deals, run_due_steps
from dealflow_sequence.application.unit_of_work import SequenceUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "Follow-up sequences (triggers, steps, exit conditions), enrollments and their "
    "scheduled steps, follow-up tasks and stale-deal alerts. Publishes on "
    "dealflow.sequence.events; consumes dealflow.opportunity.events."
)


class SequenceSettings(ServiceSettings):
    service_name: ClassVar[str] = "sequence"
    port: int = Field(default=8004, ge=1, le=65535)
    # A step waits up to one tick after its due time: at 1 s the tick alone made half the
    # p99 delay of `make bench-sequences`; an idle tick is one indexed read.
    step_tick_seconds: float = Field(
        default=0.25, gt=0, description="How often due steps are looked for and run"
    )
    step_batch_size: int = Field(
        default=200, ge=1, le=5000, description="Due steps run per transaction"
    )
    stale_after_days: float = Field(
        default=7.0,
        gt=0,
        description="An open deal with no activity and no open future task for this long "
        "is reported as opportunity.stale",
    )
    stale_check_interval_seconds: float = Field(
        default=300.0, gt=0, description="How often open deals are checked for staleness"
    )


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    return asyncapi_document(
        service="sequence",
        version=VERSION,
        description=DESCRIPTION,
        publishes=[SEQUENCE_EVENTS],
        consumes=handlers.HANDLERS,
    )


def build_app(settings: SequenceSettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=[SEQUENCE_EVENTS])
    definitions = DefinitionCache()

    def unit_of_work() -> SequenceUnitOfWork:
        return SequenceUnitOfWork(platform.engine, platform.outbox, platform.clock, definitions)

    platform.add_consumer(
        group_id="sequence-service",
        topics=[OPPORTUNITY_EVENTS],
        handlers=handlers.HANDLERS,
        unit_of_work=unit_of_work,
        background=True,
        before_batch=handlers.lock_ahead,
    )

    async def run_due() -> None:
        await run_due_steps(unit_of_work, settings.step_batch_size)

    platform.scheduler.add_job(
        run_due,
        "interval",
        seconds=settings.step_tick_seconds,
        id="run-due-steps",
        max_instances=1,
        coalesce=True,
    )
    quiet = timedelta(days=settings.stale_after_days)

    async def report_stale() -> None:
        await report_stale_deals(unit_of_work, quiet, settings.step_batch_size)

    platform.scheduler.add_job(
        report_stale,
        "interval",
        seconds=settings.stale_check_interval_seconds,
        id="report-stale-deals",
        max_instances=1,
        coalesce=True,
    )
    reader = SequenceReader(platform.engine, definitions)
    return create_app(
        platform,
        title="Dealflow sequence service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[
            sequence_routes(unit_of_work, reader),
            enrollment_routes(unit_of_work, reader),
            task_routes(unit_of_work, reader, platform.clock),
        ],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(SequenceSettings), build_app, MIGRATIONS)
