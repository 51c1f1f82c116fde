"""What a caller does to an order: record a payment, refund, cancel, issue an invoice.

Each runs in one unit of work: the order is loaded with its row locked, the caller must
be allowed to see its deal (else the order does not exist for them: 404), the domain
decides, and the order, its ledger entry or invoice and the events are written in one
commit. Nothing is written when the domain refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.money import Money
from dealflow_common.idempotency import Idempotency, IdempotencyKeyReused
from dealflow_order.application.unit_of_work import OrderUnitOfWork
from dealflow_order.domain.access import KnownDeal, can_view, require_order_work
from dealflow_order.domain.invoice import (
    Buyer,
    Invoice,
    Seller,
    TaxRates,
    check_rates,
    issue_invoice,
)
from dealflow_order.domain.model import LedgerEntry, Order, OrderNotFound

UnitOfWorkFactory = Callable[[], OrderUnitOfWork]


@dataclass(frozen=True, slots=True)
class Booked:
    entry: LedgerEntry
    replayed: bool
    """True when an earlier request with the same key had booked it: nothing new."""


async def _visible_order(
    uow: OrderUnitOfWork, order_id: UUID, caller: Principal
) -> tuple[Order, KnownDeal]:
    order = await uow.orders.get(order_id)
    deal = await uow.deals.get(order.opportunity_id)
    if not can_view(deal, caller):
        raise OrderNotFound(order_id)
    return order, deal


async def _replay(
    uow: OrderUnitOfWork, order: Order, idempotency: Idempotency | None
) -> Booked | None:
    if idempotency is None:
        return None
    earlier = await uow.orders.entry_for_key(order.id, idempotency.key)
    if earlier is None:
        return None
    entry, fingerprint = earlier
    if fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused("on this order")
    return Booked(entry, replayed=True)


async def _book(
    uow: OrderUnitOfWork, order: Order, entry: LedgerEntry, idempotency: Idempotency | None
) -> Booked:
    await uow.orders.save(order)
    await uow.orders.add_entry(
        entry,
        idempotency.key if idempotency else None,
        idempotency.fingerprint if idempotency else None,
    )
    uow.collect(order)
    await uow.commit()
    return Booked(entry, replayed=False)


@dataclass(frozen=True, slots=True)
class OrderUseCases:
    unit_of_work: UnitOfWorkFactory
    seller: Seller

    async def record_payment(
        self,
        order_id: UUID,
        caller: Principal,
        *,
        amount: Money,
        method: str,
        reference: str | None,
        received_at: datetime | None,
        idempotency: Idempotency | None,
    ) -> Booked:
        async with self.unit_of_work() as uow:
            order, deal = await _visible_order(uow, order_id, caller)
            require_order_work(deal, caller)
            replayed = await _replay(uow, order, idempotency)
            if replayed:
                return replayed
            now = uow.clock()
            entry = order.record_payment(
                amount,
                method=method,
                reference=reference,
                received_at=received_at or now,
                by=caller.user_id,
                now=now,
            )
            return await _book(uow, order, entry, idempotency)

    async def refund(
        self,
        order_id: UUID,
        caller: Principal,
        *,
        amount: Money,
        reason: str,
        idempotency: Idempotency | None,
    ) -> Booked:
        async with self.unit_of_work() as uow:
            order, deal = await _visible_order(uow, order_id, caller)
            require_order_work(deal, caller)
            replayed = await _replay(uow, order, idempotency)
            if replayed:
                return replayed
            entry = order.refund(amount, reason=reason, by=caller.user_id, now=uow.clock())
            return await _book(uow, order, entry, idempotency)

    async def cancel(self, order_id: UUID, caller: Principal, *, reason: str) -> Order:
        async with self.unit_of_work() as uow:
            order, deal = await _visible_order(uow, order_id, caller)
            require_order_work(deal, caller)
            order.cancel(reason, by=caller.user_id, now=uow.clock())
            await uow.orders.save(order)
            uow.collect(order)
            await uow.commit()
            return order

    async def issue_invoice(self, order_id: UUID, caller: Principal, *, rates: TaxRates) -> Invoice:
        async with self.unit_of_work() as uow:
            order, deal = await _visible_order(uow, order_id, caller)
            require_order_work(deal, caller)
            order.require_invoiceable()
            check_rates(order, rates)
            now = uow.clock()
            # Drawn last, after every check that can refuse: the counter row is then
            # locked for the shortest time, and a refusal never touches it.
            number = await uow.orders.next_invoice_number(now.year)
            invoice = issue_invoice(
                order,
                number_in_year=number,
                rates=rates,
                seller=self.seller,
                buyer=Buyer(
                    name=deal.customer_name or deal.customer_id or "(customer not known yet)",
                    customer_id=deal.customer_id,
                ),
                by=caller.user_id,
                now=now,
            )
            await uow.orders.save(order)
            await uow.orders.add_invoice(invoice)
            uow.collect(order)
            uow.collect(invoice)
            await uow.commit()
            return invoice
