"""The order service on a real database of its own (migrated), no broker: a PostgreSQL
schema or a SQLite file, each test running once on each (`databases`).

Deals and orders reach it the way they do in production: `opportunity.created` and
`quote.accepted` go through its consumer (`deal(...)`, `order(...)` below).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Customer,
    OpportunityCreated,
    OpportunityState,
    Stage,
)
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData
from dealflow_common.contracts.topics import ORDER_EVENTS
from dealflow_common.testing import ComponentDatabases, ServiceUnderTest, service_under_test
from dealflow_order.adapters.tables import (
    invoice_counters,
    invoices,
    known_opportunities,
    ledger_entries,
    orders,
)
from dealflow_order.bootstrap import MIGRATIONS, OrderSettings, build_app

ADMIN = {"user": "root", "roles": ("admin",), "teams": ()}
OPERATOR = {"user": "ops", "roles": ("operator",), "teams": ()}
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
OTHER_TEAM_REP = {"user": "bob", "roles": ("rep",), "teams": ("apac",)}
OTHER_TEAM_MANAGER = {"user": "max", "roles": ("manager",), "teams": ("apac",)}


def line(line_no: int, total: str, currency: str = "USD", **extra: str) -> QuoteLineData:
    return QuoteLineData(
        line_no=line_no,
        product_id=None,
        bundle_id=None,
        sku=None,
        description=extra.get("description", f"Item {line_no}"),
        quantity=Decimal(1),
        unit_price=Money.of(total, currency),
        discount_percent=Decimal(0),
        total=Money.of(total, currency),
        billing="one_off",
        billing_period=None,
    )


class Orders(ServiceUnderTest):
    async def deal(
        self,
        owners: tuple[str, ...] = ("alice",),
        team_id: str | None = "emea",
        customer_id: str = "acme",
    ) -> uuid.UUID:
        """A deal this service knows, as its `opportunity.created` made it known."""
        now = datetime.now(UTC)
        opportunity_id = uuid.uuid4()
        await self.consume(
            OpportunityCreated(
                opportunity_id=opportunity_id,
                opportunity=OpportunityState(
                    id=opportunity_id,
                    title="Fleet",
                    description=None,
                    customer=Customer(kind="organization", id=customer_id, name="ACME Corp"),
                    contact=None,
                    contact_address=None,
                    value=Money.of("1000", "USD"),
                    stage=Stage.NEGOTIATION,
                    probability=70,
                    expected_close_date=None,
                    next_action=None,
                    lead_origin=None,
                    external_reference=None,
                    owners=list(owners),
                    team_id=team_id,
                    won_quote_id=None,
                    order_id=None,
                    lost_reason=None,
                    created_by=owners[0] if owners else "someone",
                    created_at=now,
                    updated_at=now,
                    closed_at=None,
                    version=1,
                ),
            )
        )
        return opportunity_id

    async def order(
        self, deal: uuid.UUID | None = None, *lines: QuoteLineData, currency: str = "USD"
    ) -> str:
        """The order an accepted quote of `deal` becomes (one line of 1000.00 by default)."""
        deal = deal or await self.deal()
        chosen = list(lines) or [line(1, "1000.00", currency)]
        total = sum((item.total.amount for item in chosen), Decimal(0))
        quote_id = uuid.uuid4()
        self.clock.advance(seconds=1)  # each order its own moment, for the list's order
        await self.consume(
            QuoteAccepted(
                opportunity_id=deal,
                quote_id=quote_id,
                total=Money(amount=total, currency=chosen[0].total.currency),
                lines=chosen,
                accepted_at=datetime.now(UTC),
            )
        )
        page = (await self.call("GET", f"/orders?opportunity_id={deal}", **ADMIN)).json()
        (made,) = [o["id"] for o in page["items"] if o["quote_id"] == str(quote_id)]
        return str(made)

    async def written(self) -> dict[str, int]:
        """Rows of every table the API writes: equal before and after = nothing written."""
        return await self.row_counts(
            orders, ledger_entries, invoices, invoice_counters, known_opportunities
        )


@pytest.fixture(scope="module")
async def service(
    databases: ComponentDatabases, token: Callable[..., str], jwt_secret: str
) -> AsyncIterator[Orders]:
    settings = databases.settings(
        OrderSettings,
        jwt_secret,
        seller_name="Dealflow Test Ltd",
        seller_address="1 Test Street; Testville",
        seller_tax_id="GB123",
    )
    async with service_under_test(
        Orders, settings, build_app, MIGRATIONS, token, [ORDER_EVENTS]
    ) as order_service:
        yield order_service
