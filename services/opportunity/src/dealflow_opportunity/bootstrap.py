"""Composition root of the opportunity service.

The only place that reads settings and builds the engine, the broker, the relay and
the app; importing any other module of the service does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

from fastapi import FastAPI
from pydantic import Field

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import (
    OPPORTUNITY_COMMANDS,
    OPPORTUNITY_EVENTS,
    ORDER_EVENTS,
    QUOTE_EVENTS,
    SEQUENCE_EVENTS,
)
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.recent import RecentCopies
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_opportunity.adapters.custom_fields import KeptDefinitions
from dealflow_opportunity.adapters.tables import request_keys
from dealflow_opportunity.api.routes import (
    bulk_routes,
    custom_field_routes,
    opportunity_routes,
    stage_machine_routes,
)
from dealflow_opportunity.application import follow_ups, purge, saga
from dealflow_opportunity.application.metrics import DealMetrics
from dealflow_opportunity.application.queries import OpportunityReader
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain.model import Opportunity

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "Opportunities from first lead to won or lost: the stage machine, owners and teams, "
    "notes, sales history, and the authority of the accept-quote saga. Publishes every "
    "change on dealflow.opportunity.events; consumes quote and order events, and the "
    "follow-up tasks and steps of the sequence service for the deal's next action."
)


class OpportunitySettings(ServiceSettings):
    service_name: ClassVar[str] = "opportunity"
    port: int = Field(default=8001, ge=1, le=65535)
    # The most deals one bulk request changes: each is its own transaction, so a large
    # one holds the request open for long; above it the caller splits the work.
    bulk_max_size: int = Field(default=200, ge=1, le=10_000)
    recent_copies: int = Field(
        default=2_000,
        ge=0,
        description="Deals this process keeps as it last wrote them, so that the next "
        "change of one skips its read (the change's versioned write checks the copy, "
        "`dealflow_common.recent`); 0 reads every time, the custom field definitions a "
        "new deal is checked against too.",
    )


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    return asyncapi_document(
        service="opportunity",
        version=VERSION,
        description=DESCRIPTION,
        publishes=[OPPORTUNITY_EVENTS],
        consumes=[
            *saga.HANDLERS,
            *purge.QUOTE_HANDLERS,
            *purge.COMMAND_HANDLERS,
            *follow_ups.HANDLERS,
        ],
    )


def build_app(settings: OpportunitySettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=[OPPORTUNITY_EVENTS])

    metrics = DealMetrics(platform.registry)
    recent = (
        RecentCopies[UUID, Opportunity](
            settings.recent_copies,
            Opportunity.snapshot,
            lambda opportunity: opportunity.version,
            platform.registry,
            kind="opportunity",
        )
        if settings.recent_copies
        else None
    )

    # The definitions a deal's custom fields are checked against, copied as `recent` is.
    definitions = KeptDefinitions() if settings.recent_copies else None

    def unit_of_work() -> OpportunityUnitOfWork:
        return OpportunityUnitOfWork(
            platform.engine, platform.outbox, platform.clock, metrics, recent, definitions
        )

    platform.add_consumer(
        group_id="opportunity-service",
        topics=[QUOTE_EVENTS, ORDER_EVENTS],
        handlers={**saga.HANDLERS, **purge.QUOTE_HANDLERS},
        unit_of_work=unit_of_work,
        before_batch=saga.lock_ahead,
    )
    platform.add_consumer(
        group_id="opportunity-service-purge",
        topics=[OPPORTUNITY_COMMANDS],
        handlers=purge.COMMAND_HANDLERS,
        unit_of_work=unit_of_work,
        background=True,
    )
    # A group of its own: a burst of follow-up tasks never delays the accept saga.
    platform.add_consumer(
        group_id="opportunity-service-sequence",
        topics=[SEQUENCE_EVENTS],
        handlers=follow_ups.HANDLERS,
        unit_of_work=unit_of_work,
        background=True,
    )
    platform.forget_request_keys(request_keys)
    reader = OpportunityReader(platform.engine)
    return create_app(
        platform,
        title="Dealflow opportunity service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[
            bulk_routes(unit_of_work, reader, settings.bulk_max_size),
            opportunity_routes(unit_of_work, reader),
            custom_field_routes(unit_of_work, reader),
            stage_machine_routes(),
        ],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(OpportunitySettings), build_app, MIGRATIONS)
