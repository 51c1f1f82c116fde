"""The quote service's use cases, one transaction each.

A quote belongs to an opportunity this service knows from its events. Right after an
opportunity is created its events may still be on their way, so creating a quote for
an opportunity not yet known waits a moment (`opportunity_wait`) before refusing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.money import Money, plain
from dealflow_common.contracts.opportunity import Stage
from dealflow_common.contracts.quote import QuoteStatus
from dealflow_common.errors import RuleViolated
from dealflow_common.idempotency import Idempotency
from dealflow_common.one_write import once_then_locked
from dealflow_quote.application.arrivals import OpportunityArrivals
from dealflow_quote.application.queries import QuoteReader
from dealflow_quote.application.saga import SYSTEM
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.domain import access
from dealflow_quote.domain.access import KnownOpportunity
from dealflow_quote.domain.catalog import Bundle, Product
from dealflow_quote.domain.errors import (
    CatalogItemRetired,
    CurrencyMismatch,
    OpportunityClosed,
    OpportunityUnknown,
    QuoteHasExpired,
    QuoteNotFound,
)
from dealflow_quote.domain.model import AcceptanceDeadline, AcceptedVia, Quote
from dealflow_quote.domain.pricing import QuoteLine

UnitOfWorkFactory = Callable[[], QuoteUnitOfWork]


@dataclass(frozen=True, slots=True)
class QuotePolicy:
    approval_threshold_percent: Decimal
    default_validity: timedelta
    opportunity_wait: float
    """Seconds to wait for a just-created opportunity's events before refusing a quote."""
    acceptance_deadline: AcceptanceDeadline


@dataclass(frozen=True, slots=True)
class Drafted:
    quote: Quote
    replayed: bool
    """True when an earlier request with the same Idempotency-Key had drafted it."""


@dataclass(frozen=True, slots=True)
class LineRequest:
    """A line as asked for: from the catalog (product or bundle) or free text."""

    quantity: Decimal
    product_id: UUID | None = None
    bundle_id: UUID | None = None
    description: str | None = None
    unit_price: Money | None = None
    discount_percent: Decimal = Decimal(0)


async def create_quote(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    policy: QuotePolicy,
    arrivals: OpportunityArrivals,
    reader: QuoteReader,
    *,
    opportunity_id: UUID,
    lines: list[LineRequest],
    currency: str | None,
    valid_until: datetime | None,
    idempotency: Idempotency | None = None,
) -> Drafted:
    access.require_quote_work(principal)
    draft = (opportunity_id, lines, currency, valid_until, idempotency)
    with arrivals.expecting(opportunity_id) as arrival:
        try:
            drafted = await _draft_if_known(
                unit_of_work, principal, policy, *draft, must_know=False
            )
        except OpportunityUnknown as refused:
            if refused.hidden:
                # A deal the caller may not see is answered as one never heard of, and
                # after as long a wait: the time taken must not tell the two apart either.
                await asyncio.sleep(policy.opportunity_wait)
            raise
        if drafted is None:
            # Usually the opportunity's events are on their way: wait for them, once. A
            # look on the clock only reads, so on SQLite it does not take the write lock.
            async def known() -> bool:
                return await reader.knows_opportunity(opportunity_id)

            await arrival.wait(known, policy.opportunity_wait)
            drafted = await _draft_if_known(unit_of_work, principal, policy, *draft, must_know=True)
    assert drafted is not None
    return drafted


async def _draft_if_known(
    unit_of_work: UnitOfWorkFactory,
    principal: Principal,
    policy: QuotePolicy,
    opportunity_id: UUID,
    lines: list[LineRequest],
    currency: str | None,
    valid_until: datetime | None,
    idempotency: Idempotency | None,
    *,
    must_know: bool,
) -> Drafted | None:
    async def once(unlocked: bool) -> Drafted | None:
        # Unlocked, the draft reads the deal without a lock and writes once: the quote's
        # insert checks that the deal is still open (`add_at_commit`); locked, the read
        # holds the deal's row until the commit.
        async with unit_of_work().one_write(unlocked) as uow:
            if idempotency is not None:
                # A retry is answered with what the first request made, whatever the
                # deal's state now (a key costs a transaction: `claim` below).
                earlier = await uow.request_keys.earlier(principal.user_id, idempotency)
                if earlier is not None:
                    # Shown no more than a read would: its deal may be hidden from them now.
                    quote = await uow.quotes.get(earlier)
                    _visible(quote, await uow.opportunities.get(quote.opportunity_id), principal)
                    return Drafted(quote, replayed=True)
            deal = await uow.opportunities.get_to_quote(opportunity_id)
            if deal is None and not must_know:
                return None
            if deal is None:
                raise OpportunityUnknown(opportunity_id)
            if not access.can_view(deal, principal):
                raise OpportunityUnknown(opportunity_id).unseen()
            access.require_deal_work(deal, principal)
            if not deal.is_open:
                raise OpportunityClosed(opportunity_id, deal.stage.value)
            resolved = await _resolve_lines(uow, lines, currency)
            now = uow.clock()
            quote = Quote.draft(
                opportunity_id=opportunity_id,
                currency=currency or resolved[0].currency,
                lines=resolved,
                valid_until=valid_until or now + policy.default_validity,
                by=principal.user_id,
                now=now,
            )
            if idempotency is not None:
                await uow.request_keys.claim(principal.user_id, idempotency, quote.id, now)
            # The quote and its lines go with its events, in one statement (`last_write`).
            last = uow.quotes.add_at_commit(quote)
            uow.collect(quote)
            await uow.commit(last)
        return Drafted(quote, replayed=False)

    return await once_then_locked(once, None)


async def _resolve_lines(
    uow: QuoteUnitOfWork, requests: list[LineRequest], currency: str | None
) -> list[QuoteLine]:
    """Fill catalog lines with their list price and name; keep a special price if given."""
    products = await uow.catalog.products_by_id([r.product_id for r in requests if r.product_id])
    bundles = await uow.catalog.bundles_by_id([r.bundle_id for r in requests if r.bundle_id])
    lines = []
    for index, request in enumerate(requests):
        where = f"lines[{index}]"
        item: Product | Bundle | None = None
        if request.product_id is not None:
            item = products.get(request.product_id)
            if item is None:
                raise RuleViolated(f"{where}.product_id", f"no product {request.product_id}")
        elif request.bundle_id is not None:
            item = bundles.get(request.bundle_id)
            if item is None:
                raise RuleViolated(f"{where}.bundle_id", f"no bundle {request.bundle_id}")
        if item is not None and item.retired:
            raise CatalogItemRetired(
                f"{where}.{'product_id' if request.product_id else 'bundle_id'}", item.sku
            )
        list_price = item.list_price if isinstance(item, Product) else item.price if item else None
        unit_price = request.unit_price or list_price
        if unit_price is None:  # the API refuses a free-text line without a price
            raise RuleViolated(f"{where}.unit_price", "a free-text line needs a unit price")
        if list_price is not None and list_price.currency != unit_price.currency:
            raise CurrencyMismatch(
                f"{where}.unit_price.currency", unit_price.currency, list_price.currency
            )
        if currency is not None and unit_price.currency != currency:
            raise CurrencyMismatch(f"{where}.unit_price.currency", unit_price.currency, currency)
        lines.append(
            QuoteLine(
                line_no=index + 1,
                description=request.description or (item.name if item else ""),
                # As a read gives them back (2.500 -> 2.5): so does every answer, a
                # change's made from a copy (`recent`) included.
                quantity=plain(request.quantity),
                unit_price=unit_price,
                discount_percent=plain(request.discount_percent),
                product_id=request.product_id,
                bundle_id=request.bundle_id,
                sku=item.sku if item else None,
                billing=(
                    item.billing
                    if isinstance(item, Product)
                    else "subscription"
                    if isinstance(item, Bundle)
                    else "one_off"
                ),
                billing_period=item.billing_period if item else None,
            )
        )
    return lines


def _visible(quote: Quote, deal: KnownOpportunity | None, principal: Principal) -> KnownOpportunity:
    if deal is None:
        raise QuoteNotFound(quote.id)
    if not access.can_view(deal, principal):
        # Someone who may not see the deal learns nothing about its quotes.
        raise QuoteNotFound(quote.id).unseen()
    return deal


def _workable(
    quote: Quote, deal: KnownOpportunity | None, principal: Principal
) -> KnownOpportunity:
    """The quote's deal, when the caller may work on it: 404 when they may not see it,
    403 when they may only read it."""
    visible = _visible(quote, deal, principal)
    access.require_deal_work(visible, principal)
    return visible


async def change_quote(
    unit_of_work: UnitOfWorkFactory,
    quote_id: UUID,
    principal: Principal,
    expected_version: int | None,
    apply: Callable[[Quote, datetime], object],
    authorize: Callable[[Principal], None] = access.require_quote_work,
) -> Quote:

    async def once(unlocked: bool) -> Quote:
        # Unlocked, a change of the quote's row alone writes once (`one_write`).
        async with unit_of_work().one_write(unlocked) as uow:
            quote, deal = await uow.quotes.get_to_change(quote_id)
            _workable(quote, deal, principal)
            authorize(principal)
            quote.check_version(expected_version)
            apply(quote, uow.clock())
            # The quote's row goes with its events, in one statement (`last_write`).
            last = await uow.quotes.save_at_commit(quote)
            uow.collect(quote)
            await uow.commit(last)
        return quote

    return await once_then_locked(once, expected_version)


async def accept_quote(
    unit_of_work: UnitOfWorkFactory,
    quote_id: UUID,
    *,
    principal: Principal | None,
    deadline: AcceptanceDeadline,
    expected_version: int | None = None,
    opportunity_id: UUID | None = None,
) -> Quote:
    """The customer accepts: by a user for them, or through a buy-now link (no user; the
    signed link names the quote and its opportunity). The opportunity's answer is
    awaited as `deadline` says (`chase_unanswered_acceptances`)."""

    async def once(unlocked: bool) -> tuple[Quote, bool]:
        async with unit_of_work().one_write(unlocked) as uow:
            quote, found = await uow.quotes.get_to_change(quote_id)
            if principal is not None:
                deal = _workable(quote, found, principal)
                access.require_quote_work(principal)
            else:
                if found is None or quote.opportunity_id != opportunity_id:
                    raise QuoteNotFound(quote_id)
                deal = found
            quote.check_version(expected_version)
            if not deal.is_open:
                raise OpportunityClosed(deal.id, deal.stage.value)
            by = principal.user_id if principal else "customer"
            via: AcceptedVia = "api" if principal else "buy_now_link"
            accepted = quote.request_acceptance(by, uow.clock(), via, deadline)
            last = await uow.quotes.save_at_commit(quote)
            uow.collect(quote)
            await uow.commit(last)
        return quote, accepted

    quote, accepted = await once_then_locked(once, expected_version)
    if not accepted:
        raise QuoteHasExpired(quote.valid_until)
    return quote


async def revise_quote(
    unit_of_work: UnitOfWorkFactory,
    quote_id: UUID,
    principal: Principal,
    expected_version: int | None,
    lines: list[LineRequest] | None,
    valid_until: datetime | None,
) -> Quote:

    async def once(unlocked: bool) -> Quote:
        # New lines are written before the row: they begin the transaction (`one_write`).
        # It reads, not copies: lines written for a quote gone since its copy was taken
        # would fail on their foreign key, not on the versioned write that checks copies.
        async with unit_of_work().one_write(unlocked) as uow:
            quote, deal = await uow.quotes.get_with_deal(quote_id)
            _workable(quote, deal, principal)
            access.require_quote_work(principal)
            quote.check_version(expected_version)
            resolved = await _resolve_lines(uow, lines, quote.currency) if lines else None
            quote.revise(principal.user_id, uow.clock(), lines=resolved, valid_until=valid_until)
            last = await uow.quotes.save_at_commit(quote)
            uow.collect(quote)
            await uow.commit(last)
        return quote

    return await once_then_locked(once, expected_version)


async def expire_due_quotes(unit_of_work: UnitOfWorkFactory, batch: int = 200) -> int:
    """Expire every presented quote past its validity; the scheduler calls this.

    Due times live in the database, so a restart neither skips nor repeats one, and
    replicas running it together take different quotes (SKIP LOCKED).
    """
    expired = 0
    while True:
        async with unit_of_work() as uow:
            now = uow.clock()
            due = await uow.quotes.due_for_expiry(now, batch)
            for quote in due:
                if quote.expire(now):
                    await uow.quotes.save(quote)
                    uow.collect(quote)
                    expired += 1
            await uow.commit()
        if len(due) < batch:
            return expired


async def chase_unanswered_acceptances(
    unit_of_work: UnitOfWorkFactory, deadline: AcceptanceDeadline, batch: int = 200
) -> int:
    """Ask the opportunity again about every acceptance it has not answered by its due
    time, and stop waiting after the last attempt; the scheduler calls this. Returns
    how many quotes it moved.

    As for expiry, due times live in the database and replicas take different quotes
    (SKIP LOCKED); an answer being applied holds its quote's lock, so the job skips that
    quote rather than deciding against it. What this service already knows of the deal
    counts as an answer: a deal won by the quote accepts it; a quote that stops waiting
    on a deal lost, or won by another quote, is abandoned as a refusal would leave it.
    """
    moved = 0
    while True:
        async with unit_of_work() as uow:
            now = uow.clock()
            due = await uow.quotes.awaiting_answer(now, batch)
            for quote in due:
                deal = await uow.opportunities.get(quote.opportunity_id)
                if deal is not None and deal.won_quote_id == quote.id:
                    quote.confirm_acceptance(now)
                elif quote.chase_acceptance(deadline, now) and _lost_to_it(deal, quote):
                    assert deal is not None
                    quote.abandon(f"the opportunity is {deal.stage.value}", SYSTEM, now)
                await uow.quotes.save(quote)
                uow.collect(quote)
                moved += 1
            await uow.commit()
        if len(due) < batch:
            return moved


def _lost_to_it(deal: KnownOpportunity | None, quote: Quote) -> bool:
    """The quote stopped waiting on a deal it can no longer win."""
    if quote.status != QuoteStatus.PRESENTED or deal is None:
        return False
    won_by_another = deal.won_quote_id is not None and deal.won_quote_id != quote.id
    return deal.stage == Stage.CLOSED_LOST or won_by_another
