"""Composition root of the quote service.

The only place that reads settings and builds the engine, the broker, the consumer of
opportunity events, the expiry and acceptance deadline schedules and the app.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field, SecretStr, field_validator

from dealflow_common.contracts.asyncapi import asyncapi_document
from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS, QUOTE_COMMANDS, QUOTE_EVENTS
from dealflow_common.http.app import create_app
from dealflow_common.platform import Platform, build_platform
from dealflow_common.service import load_settings, run_service
from dealflow_common.settings import ServiceSettings
from dealflow_quote.adapters.buy_now import BuyNowLinks
from dealflow_quote.adapters.repository import QuoteCopies
from dealflow_quote.adapters.tables import request_keys
from dealflow_quote.api.routes import buy_now_routes, catalog_routes, quote_routes, saga_routes
from dealflow_quote.application import purge, saga
from dealflow_quote.application.arrivals import OpportunityArrivals
from dealflow_quote.application.queries import QuoteReader
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.application.use_cases import (
    QuotePolicy,
    chase_unanswered_acceptances,
    expire_due_quotes,
)
from dealflow_quote.domain.model import AcceptanceDeadline

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
DESCRIPTION = (
    "The product catalog, quotes with their lines and lifecycle, buy-now links, and the "
    "quote side of the accept-quote saga. Publishes on dealflow.quote.events; consumes "
    "dealflow.opportunity.events."
)


class QuoteSettings(ServiceSettings):
    service_name: ClassVar[str] = "quote"
    port: int = Field(default=8002, ge=1, le=65535)
    approval_threshold_percent: Decimal = Field(
        default=Decimal(20),
        ge=0,
        le=100,
        description="A quote giving away more than this share of list value needs approval",
    )
    quote_validity_days: int = Field(default=30, ge=1, le=365)
    expiry_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often due quotes are expired and unanswered acceptances chased",
    )
    acceptance_deadline_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a quote awaits the opportunity's answer to an acceptance "
        "before asking again (the opportunity ignores a request read later)",
    )
    acceptance_asks_again: int = Field(
        default=2,
        ge=0,
        description="How many times an unanswered acceptance is asked again before the "
        "quote stops waiting and is presented again (quote.acceptance_rejected)",
    )
    buy_now_secret: SecretStr = Field(
        description="Signs buy-now links; no default, at least 32 characters"
    )
    buy_now_link_ttl_hours: int = Field(default=168, ge=1)
    public_base_url: str | None = Field(
        default=None, description="Where customers reach this service (buy-now links)"
    )
    opportunity_wait_ms: int = Field(
        default=3000,
        ge=0,
        description="How long a new quote waits for its just-created opportunity's events",
    )
    recent_copies: int = Field(
        default=2_000,
        ge=0,
        description="Quotes and deals this process keeps as it last wrote or decided on "
        "them, so that the next change of one skips its read (the change's one statement "
        "checks the copies, `dealflow_common.recent`); 0 reads every time.",
    )

    @field_validator("buy_now_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < 32:
            raise ValueError("DEALFLOW_BUY_NOW_SECRET must be at least 32 characters")
        return secret


def asyncapi() -> dict[str, Any]:
    """What this service publishes and consumes (served at /asyncapi.json, in docs/)."""
    return asyncapi_document(
        service="quote",
        version=VERSION,
        description=DESCRIPTION,
        publishes=[QUOTE_EVENTS],
        consumes=[*saga.handlers(OpportunityArrivals()), *purge.HANDLERS],
    )


def build_app(settings: QuoteSettings, platform: Platform | None = None) -> FastAPI:
    platform = platform or build_platform(settings, publishes=[QUOTE_EVENTS])

    copies = (
        QuoteCopies.of(settings.recent_copies, platform.registry)
        if settings.recent_copies
        else None
    )

    def unit_of_work() -> QuoteUnitOfWork:
        return QuoteUnitOfWork(platform.engine, platform.outbox, platform.clock, copies)

    deadline = AcceptanceDeadline(
        answer_within=timedelta(seconds=settings.acceptance_deadline_seconds),
        asks_again=settings.acceptance_asks_again,
    )
    policy = QuotePolicy(
        approval_threshold_percent=settings.approval_threshold_percent,
        default_validity=timedelta(days=settings.quote_validity_days),
        opportunity_wait=settings.opportunity_wait_ms / 1000,
        acceptance_deadline=deadline,
    )
    links = BuyNowLinks(
        settings.buy_now_secret,
        settings.public_base_url or f"http://{settings.host}:{settings.port}",
        timedelta(hours=settings.buy_now_link_ttl_hours),
    )
    arrivals = OpportunityArrivals()
    platform.add_consumer(
        group_id="quote-service",
        topics=[OPPORTUNITY_EVENTS],
        handlers=saga.handlers(arrivals),
        unit_of_work=unit_of_work,
        before_batch=saga.lock_ahead,
        changes_nothing=saga.changes_nothing,
    )
    platform.add_consumer(
        group_id="quote-service-purge",
        topics=[QUOTE_COMMANDS],
        handlers=purge.HANDLERS,
        unit_of_work=unit_of_work,
        background=True,
    )

    async def expire_due() -> None:
        await expire_due_quotes(unit_of_work)

    platform.scheduler.add_job(
        expire_due,
        "interval",
        seconds=settings.expiry_interval_seconds,
        id="expire-due-quotes",
        max_instances=1,
        coalesce=True,
    )

    async def chase_unanswered() -> None:
        await chase_unanswered_acceptances(unit_of_work, deadline)

    platform.scheduler.add_job(
        chase_unanswered,
        "interval",
        seconds=settings.expiry_interval_seconds,
        id="chase-unanswered-acceptances",
        max_instances=1,
        coalesce=True,
    )
    platform.forget_request_keys(request_keys)
    reader = QuoteReader(platform.engine)
    return create_app(
        platform,
        title="Dealflow quote service",
        description=DESCRIPTION,
        version=VERSION,
        routers=[
            quote_routes(unit_of_work, reader, policy, arrivals, links, platform.clock),
            buy_now_routes(unit_of_work, reader, links, platform.clock, deadline),
            catalog_routes(unit_of_work, reader),
            saga_routes(reader, platform.clock, deadline),
        ],
        asyncapi=asyncapi(),
    )


def main() -> None:
    run_service(load_settings(QuoteSettings), build_app, MIGRATIONS)
