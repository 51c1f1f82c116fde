"""The product catalog: what can be quoted, at which list price."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import BillingPeriod
from dealflow_common.errors import RuleViolated


@dataclass(eq=False)
class Product:
    id: UUID
    sku: str
    name: str
    description: str | None
    list_price: Money
    billing: Literal["one_off", "subscription"]
    billing_period: BillingPeriod | None
    retired_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    def __post_init__(self) -> None:
        check_billing(self.billing, self.billing_period)

    @property
    def retired(self) -> bool:
        return self.retired_at is not None


@dataclass(frozen=True, slots=True)
class BundleItem:
    product_id: UUID
    quantity: int


@dataclass(eq=False)
class Bundle:
    """Several subscription products sold together at one price."""

    id: UUID
    sku: str
    name: str
    description: str | None
    price: Money
    billing_period: BillingPeriod
    items: list[BundleItem]
    retired_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def retired(self) -> bool:
        return self.retired_at is not None


def check_billing(billing: str, period: BillingPeriod | None) -> None:
    if billing == "subscription" and period is None:
        raise RuleViolated("billing_period", "a subscription needs a billing period")
    if billing == "one_off" and period is not None:
        raise RuleViolated("billing_period", "a one-off product has no billing period")


def check_bundle(products: dict[UUID, Product], bundle: Bundle) -> None:
    """Bundle items are existing, active subscriptions in the bundle's currency and period."""
    if not bundle.items:
        raise RuleViolated("items", "a bundle holds at least one product")
    for index, item in enumerate(bundle.items):
        product = products.get(item.product_id)
        field = f"items[{index}].product_id"
        if product is None:
            raise RuleViolated(field, f"no product {item.product_id}")
        if product.retired:
            raise RuleViolated(field, f"{product.sku} is retired")
        if product.billing != "subscription":
            raise RuleViolated(field, f"{product.sku} is not a subscription")
        if product.billing_period != bundle.billing_period:
            raise RuleViolated(field, f"{product.sku} is billed per {product.billing_period}")
        if product.list_price.currency != bundle.price.currency:
            raise RuleViolated(field, f"{product.sku} is priced in {product.list_price.currency}")
