"""Composition root of the order service."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, ORDER_EVENTS, QUOTE_EVENTS
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_order.api.routes import order_routes
from dealflow_order.application import handlers
from dealflow_order.application.queries import OrderReader
from dealflow_order.application.unit_of_work import OrderUnitOfWork
from dealflow_order.application.use_cases import OrderUseCases
from dealflow_order.domain.invoice import Seller

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.2.0"
DESCRIPTION = (
    "Orders created from accepted quotes, one per quote, with their payments, refunds "
    "and invoices; seen by whoever may see their deal. Publishes on "
    "dealflow.order.events; consumes dealflow.quote.events and dealflow.opportunity.events."
)


class OrderSettings(ServiceSettings):
    service_name: ClassVar[str] = "order"
    port: int = Field(default=8003, ge=1, le=65535)
    # The seller's details printed on every invoice the customer receives. The default
    # name says it is missing, on the document itself, rather than invent a seller.
    seller_name: str = Field(
        default="Seller not configured (DEALFLOW_SELLER_NAME)",
        min_length=1,
        max_length=200,
        description="The seller's legal name on invoices.",
    )
    seller_address: str = Field(
        default="",
        max_length=500,
        description="The seller's postal address on invoices, lines separated by ';'.",
    )
    seller_tax_id: str = Field(
        default="", max_length=50, description="The seller's VAT or tax id on invoices."
    )
    seller_email: str = Field(
        default="", max_length=320, description="Where customers write about invoices."
    )

    def seller(self) -> Seller:
        return Seller(
            name=self.seller_name,
            address=tuple(part.strip() for part in self.seller_address.split(";") if part.strip()),
            tax_id=self.seller_tax_id or None,
            email=self.seller_email or None,
        )


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
        topics=[QUOTE_EVENTS, OPPORTUNITY_EVENTS],
        handlers=handlers.HANDLERS,
        unit_of_work=unit_of_work,
        before_batch=handlers.lock_ahead,
    )
    use_cases = OrderUseCases(unit_of_work=unit_of_work, seller=settings.seller())
    return create_app(
        platform,
        title="Dealflow order service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[order_routes(OrderReader(platform.engine), use_cases)],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(OrderSettings), build_app, MIGRATIONS)
