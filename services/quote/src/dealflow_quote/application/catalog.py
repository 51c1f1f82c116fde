"""Catalog use cases: products and bundles, changed by admins, read by everyone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import BillingPeriod
from dealflow_common.errors import Conflict, StaleVersion
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.domain import access
from dealflow_quote.domain.catalog import Bundle, BundleItem, Product, check_billing, check_bundle

UnitOfWorkFactory = Callable[[], QuoteUnitOfWork]


def _check_version(entity: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise StaleVersion(entity, expected, actual)


class SkuTaken(Conflict):
    def __init__(self, sku: str) -> None:
        super().__init__(f"SKU {sku} is already in the catalog")


async def create_product(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    *,
    sku: str,
    name: str,
    description: str | None,
    list_price: Money,
    billing: Literal["one_off", "subscription"],
    billing_period: BillingPeriod | None,
) -> Product:
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        if await uow.catalog.sku_taken(sku):
            raise SkuTaken(sku)
        now = uow.clock()
        product = Product(
            id=uuid.uuid4(),
            sku=sku,
            name=name,
            description=description,
            list_price=list_price,
            billing=billing,
            billing_period=billing_period,
            retired_at=None,
            created_at=now,
            updated_at=now,
            version=1,
        )
        await uow.catalog.add_product(product)
        await uow.commit()
    return product


async def update_product(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    product_id: UUID,
    expected_version: int | None,
    **changes: Any,
) -> Product:
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        product = await uow.catalog.product(product_id)
        _check_version("product", expected_version, product.version)
        if "sku" in changes and await uow.catalog.sku_taken(changes["sku"], product_id):
            raise SkuTaken(changes["sku"])
        for name, value in changes.items():
            setattr(product, name, value)
        check_billing(product.billing, product.billing_period)
        product.updated_at = uow.clock()
        product.version += 1
        await uow.catalog.save_product(product)
        await uow.commit()
    return product


async def retire_product(
    unit_of_work: UnitOfWorkFactory, principal: Principal, product_id: UUID
) -> Product:
    """A retired product stays on the quotes that have it but cannot be quoted again."""
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        product = await uow.catalog.product(product_id)
        if product.retired_at is None:
            product.retired_at = product.updated_at = uow.clock()
            product.version += 1
            await uow.catalog.save_product(product)
            await uow.commit()
    return product


async def create_bundle(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    *,
    sku: str,
    name: str,
    description: str | None,
    price: Money,
    billing_period: BillingPeriod,
    items: list[BundleItem],
) -> Bundle:
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        if await uow.catalog.sku_taken(sku):
            raise SkuTaken(sku)
        now = uow.clock()
        bundle = Bundle(
            id=uuid.uuid4(),
            sku=sku,
            name=name,
            description=description,
            price=price,
            billing_period=billing_period,
            items=items,
            retired_at=None,
            created_at=now,
            updated_at=now,
            version=1,
        )
        check_bundle(await uow.catalog.products_by_id([i.product_id for i in items]), bundle)
        await uow.catalog.add_bundle(bundle)
        await uow.commit()
    return bundle


async def update_bundle(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    bundle_id: UUID,
    expected_version: int | None,
    **changes: Any,
) -> Bundle:
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        bundle = await uow.catalog.bundle(bundle_id)
        _check_version("bundle", expected_version, bundle.version)
        if "sku" in changes and await uow.catalog.sku_taken(changes["sku"], bundle_id):
            raise SkuTaken(changes["sku"])
        for name, value in changes.items():
            setattr(bundle, name, value)
        check_bundle(await uow.catalog.products_by_id([i.product_id for i in bundle.items]), bundle)
        bundle.updated_at = uow.clock()
        bundle.version += 1
        await uow.catalog.save_bundle(bundle)
        await uow.commit()
    return bundle


async def retire_bundle(
    unit_of_work: UnitOfWorkFactory, principal: Principal, bundle_id: UUID
) -> Bundle:
    access.require_catalog_admin(principal)
    async with unit_of_work() as uow:
        bundle = await uow.catalog.bundle(bundle_id)
        if bundle.retired_at is None:
            bundle.retired_at = bundle.updated_at = uow.clock()
            bundle.version += 1
            await uow.catalog.save_bundle(bundle)
            await uow.commit()
    return bundle
