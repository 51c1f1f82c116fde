"""Composition root of the order service."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import ORDER_EVENTS, QUOTE_EVENTS
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_order.api.routes import order_routes
from dealflow_order.application import handlers
from dealflow_order.application.unit_of_work import OrderUnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "Orders created from accepted quotes, one per quote. Publishes on "
    "dealflow.order.events; consumes dealflow.quote.events."
)


class OrderSettings(ServiceSettings):
    service_name: ClassVar[str] = "order"
    port: int = Field(default=8003, ge=1, le=65535)


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    return asyncapi_document(
        service="order",
        version=VERSION,
        description=DESCRIPTION,
        publishes=[ORDER_EVENTS],
        consumes=handlers.HANDLERS,
    )


def build_app(settings: OrderSettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=[ORDER_EVENTS])

    def unit_of_work() -> OrderUnitOfWork:
        return OrderUnitOfWork(platform.engine, platform.outbox, platform.clock)

    platform.add_consumer(
        group_id="order-service",
        topics=[QUOTE_EVENTS],
        handlers=handlers.HANDLERS,
        unit_of_work=unit_of_work,
    )
    return create_app(
        platform,
        title="Dealflow order service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[order_routes(platform.engine)],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(OrderSettings), build_app, MIGRATIONS)
