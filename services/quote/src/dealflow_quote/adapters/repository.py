"""Quote service persistence: quotes with their lines, the catalog, known opportunities.

Writes lock rows (`FOR UPDATE` on PostgreSQL; SQLite writers are serialised by
`BEGIN IMMEDIATE`). The expiry and acceptance deadline jobs take due quotes with
`SKIP LOCKED`, so replicas share the work and never handle the same quote twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from prometheus_client import CollectorRegistry
from sqlalchemy import (
    JSON,
    ColumnElement,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.money import Money, plain
from dealflow_common.contracts.opportunity import Stage
from dealflow_common.contracts.quote import BillingPeriod, QuoteStatus
from dealflow_common.db import is_postgres
from dealflow_common.deal_access import shares_from_document, shares_to_document
from dealflow_common.direct import DirectStatement
from dealflow_common.last_write import LastWrite
from dealflow_common.messaging.projection import AppliedSequences, HeldRows, ProjectionRows
from dealflow_common.one_write import ReadChanged, StaleCopy, is_one_write
from dealflow_common.recent import RecentCopies
from dealflow_common.versioned import VersionedTable
from dealflow_common.with_lines import InsertWithLines
from dealflow_quote.adapters.tables import (
    bundle_items,
    bundles,
    known_opportunities,
    products,
    quote_lines,
    quotes,
)
from dealflow_quote.domain import lifecycle
from dealflow_quote.domain.access import OPEN_STAGES, KnownOpportunity
from dealflow_quote.domain.catalog import Bundle, BundleItem, Product
from dealflow_quote.domain.errors import BundleNotFound, ProductNotFound, QuoteNotFound
from dealflow_quote.domain.model import AcceptanceRequest, Quote
from dealflow_quote.domain.pricing import QuoteLine

# Statements are built once and executed with parameters (see the opportunity service).
_SELECT_QUOTE = select(quotes).where(quotes.c.id == bindparam("b_id"))
# A new quote and its lines in one statement (a quote is created twice a deal).
# A quote is stored only while its deal is open: the insert reads the deal's row itself,
# for share, so a draft that read the deal unlocked never lands on a deal closed since
# (`with_lines`' gate). The stages are the enum's values, as the column holds them.
_DEAL_STILL_OPEN = (
    select(known_opportunities.c.id)
    .where(
        known_opportunities.c.id == bindparam("g_opportunity_id"),
        known_opportunities.c.stage.in_(sorted(stage.value for stage in OPEN_STAGES)),
    )
    .with_for_update(read=True)
)
_INSERT_QUOTE_WITH_LINES = InsertWithLines(quotes, quote_lines, "quote_id", gate=_DEAL_STILL_OPEN)
_VERSIONED_QUOTE = VersionedTable(quotes, "quote")


def _deal_as_copied() -> tuple[ColumnElement[bool], ...]:
    """The deal's row is the one a copy of it decided on (`recent`): the same stage and
    the same applied sequences. Every field of the projection moves only with a newer
    event, and so with its sequence (`AppliedSequences.offer`), but the stage, which the
    purge moves too (`mark_purge_pending`): the two together change whenever the row does."""
    return (
        known_opportunities.c.stage == bindparam("g_deal_stage"),
        known_opportunities.c.applied_sequences.is_not_distinct_from(
            bindparam("g_deal_sequences", type_=known_opportunities.c.applied_sequences.type)
        ),
    )


# A quote drafted on a copy of its deal, and a quote changed on copies of itself and its
# deal, check the deal's row in their one statement as well.
_INSERT_QUOTE_ON_COPY = InsertWithLines(
    quotes,
    quote_lines,
    "quote_id",
    gate=_DEAL_STILL_OPEN.where(*_deal_as_copied()),
)
# OFFSET 0 keeps the deal's check a subplan run on the quote's row. Pulled up into a join,
# the update would carry the deal's whole row for its recheck (EvalPlanQual): 25 µs more
# of the database's CPU a write, as much as the read the copy saves.
_VERSIONED_QUOTE_ON_COPY = VersionedTable(
    quotes,
    "quote",
    guard=exists(
        select(literal_column("1"))
        .where(known_opportunities.c.id == quotes.c.opportunity_id, *_deal_as_copied())
        .offset(literal_column("0"))
    ),
)
_VERSIONED_PRODUCT = VersionedTable(products, "product")
_VERSIONED_BUNDLE = VersionedTable(bundles, "bundle")
_DELETE_LINES = delete(quote_lines).where(quote_lines.c.quote_id == bindparam("b_id"))
_INSERT_LINES = DirectStatement(insert(quote_lines))
_LINES_OF = (
    select(quote_lines)
    .where(quote_lines.c.quote_id.in_(bindparam("b_ids", expanding=True)))
    .order_by(quote_lines.c.quote_id, quote_lines.c.line_no)
)
_OPEN_QUOTES_OF = (
    select(quotes)
    .where(
        quotes.c.opportunity_id == bindparam("b_opportunity"),
        quotes.c.status.in_([s.value for s in lifecycle.OPEN]),
    )
    .order_by(quotes.c.created_at, quotes.c.id)
)
# On PostgreSQL a quote is loaded for a change in one statement, its lines aggregated
# beside its row (as text, so that amounts stay exact): every change of a quote loads
# it, and the lines were a round trip of their own. SQLite reads them apart.
_LINE_FIELDS = (
    quote_lines.c.line_no,
    cast(quote_lines.c.product_id, Text),
    cast(quote_lines.c.bundle_id, Text),
    quote_lines.c.sku,
    quote_lines.c.description,
    cast(quote_lines.c.quantity, Text),
    cast(quote_lines.c.unit_price_amount, Text),
    quote_lines.c.unit_price_currency,
    cast(quote_lines.c.discount_percent, Text),
    quote_lines.c.billing,
    quote_lines.c.billing_period,
)
_WHOLE_LINES = (
    select(
        func.json_agg(
            aggregate_order_by(func.json_build_array(*_LINE_FIELDS), quote_lines.c.line_no),
            type_=JSON,
        )
    )
    .where(quote_lines.c.quote_id == quotes.c.id)
    .scalar_subquery()
    .label("whole_lines")
)
_WHOLE_QUOTE_FOR_UPDATE = DirectStatement(
    select(quotes, _WHOLE_LINES).where(quotes.c.id == bindparam("b_id")).with_for_update(of=quotes)
)
# Every change of a quote checks that the caller may work on its deal: the deal's
# projection is read beside the quote (unlocked, as it was read apart).
_WHOLE_QUOTE_AND_DEAL = (
    select(quotes, _WHOLE_LINES, *(c.label(f"deal_{c.name}") for c in known_opportunities.c))
    .select_from(
        quotes.outerjoin(known_opportunities, known_opportunities.c.id == quotes.c.opportunity_id)
    )
    .where(quotes.c.id == bindparam("b_id"))
)
_WHOLE_QUOTE_AND_DEAL_FOR_UPDATE = DirectStatement(_WHOLE_QUOTE_AND_DEAL.with_for_update(of=quotes))
_WHOLE_QUOTE_AND_DEAL_UNLOCKED = DirectStatement(_WHOLE_QUOTE_AND_DEAL)
_WHOLE_OPEN_QUOTES_FOR_UPDATE = DirectStatement(
    _OPEN_QUOTES_OF.add_columns(_WHOLE_LINES).with_for_update(of=quotes)
)
# The open quotes of a consumer batch's closing deals, in one statement.
_WHOLE_OPEN_QUOTES_OF_MANY_FOR_UPDATE = DirectStatement(
    select(quotes, _WHOLE_LINES)
    .where(
        quotes.c.opportunity_id
        == any_(bindparam("b_opportunities", type_=postgresql.ARRAY(quotes.c.opportunity_id.type))),
        quotes.c.status.in_([s.value for s in lifecycle.OPEN]),
    )
    .order_by(quotes.c.created_at, quotes.c.id)
    .with_for_update(of=quotes)
)
_KNOWN = ProjectionRows(known_opportunities)


async def _deal_closed(_connection: AsyncConnection) -> None:
    raise ReadChanged("the deal closed or went since it was read")


Served = Callable[[Callable[[], None]], None]
"""`UnitOfWork.served_copy` of the work a repository serves."""


@dataclass(frozen=True, slots=True)
class QuoteCopies:
    """What this process committed last (`dealflow_common.recent`): quotes, each with the
    deal its last change was decided on, and deals, for the next quote drafted on one
    (the consumer keeps those it writes; a change, the one it decided on). A copy skips
    the read before a change; the change's one statement checks both rows. A deal a
    change decided on was read unlocked and may be out of date when kept: that check
    makes it a cost (a refusal and a read), never an answer."""

    quotes: RecentCopies[UUID, tuple[Quote, KnownOpportunity]]
    deals: RecentCopies[UUID, KnownOpportunity]

    @classmethod
    def of(cls, capacity: int, registry: CollectorRegistry | None = None) -> QuoteCopies:
        return cls(
            RecentCopies(
                capacity,
                lambda kept: (kept[0].snapshot(), kept[1].snapshot()),
                lambda kept: kept[0].version,
                registry,
                kind="quote",
            ),
            RecentCopies(
                capacity,
                KnownOpportunity.snapshot,
                # Each field's sequence only grows (`AppliedSequences.offer`): their sum
                # tells a later state of the row from an earlier one.
                lambda deal: sum(deal.sequences.by_field.values()),
                registry,
                kind="deal",
            ),
        )

    def keep(
        self,
        written: Iterable[Quote],
        decided_on: Mapping[UUID, KnownOpportunity],
        deals: Iterable[KnownOpportunity],
    ) -> None:
        """After a commit: the deals it wrote or decided on, the quotes it wrote with the
        deal each was decided on. A quote written without one (the consumer's) is
        forgotten: its copy is out of date."""
        for deal in deals:
            if _copyable(deal):
                self.deals.keep(deal.id, deal)
            else:
                self.deals.forget(deal.id)
        for quote in written:
            deal_of = decided_on.get(quote.id)
            if deal_of is not None and _copyable(deal_of):
                self.quotes.keep(quote.id, (quote, deal_of))
            else:
                self.quotes.forget(quote.id)


def _copyable(deal: KnownOpportunity) -> bool:
    """A row from before revision 0002 holds no applied sequences (NULL), which never
    equals a copy's document: a copy of it would always be refused."""
    return deal.sequences.source is not None


def _deal_guard(deal: KnownOpportunity) -> dict[str, Any]:
    """`_deal_as_copied`'s parameters for a copy of the deal."""
    return {"g_deal_stage": deal.stage.value, "g_deal_sequences": deal.sequences.to_document()}


class QuoteRepository:
    def __init__(
        self,
        connection: AsyncConnection,
        copies: QuoteCopies | None = None,
        served: Served | None = None,
        deals: KnownOpportunities | None = None,
    ) -> None:
        """`deals`: the work's deals, whose copies a new quote's insert checks."""
        self._connection = connection
        self._loaded: dict[UUID, int] = {}
        self._open_ahead: dict[UUID, list[Quote]] = {}
        """Open quotes of deals read ahead (`lock_ahead_open_quotes`), by deal, until
        `open_quotes_of` takes them or a quote of the deal is saved."""
        self._copies = copies
        self._served = served
        self._deals = deals
        self._on_copy: dict[UUID, KnownOpportunity] = {}
        """Quotes served as copies, with the copy of their deal their write checks."""
        self.decided_on: dict[UUID, KnownOpportunity] = {}
        """The deal each change of a quote was decided on, read or copied."""
        self.written: dict[UUID, Quote] = {}
        """The quotes this work wrote, as they are once it commits."""

    async def lock_ahead_open_quotes(self, opportunity_ids: Iterable[UUID]) -> None:
        """Load and lock, in one statement, the open quotes of the deals a consumer's
        batch closes: `open_quotes_of` then answers each deal from here, once
        (PostgreSQL; SQLite's writers are serialised anyway)."""
        wanted = set(opportunity_ids).difference(self._open_ahead)
        if not wanted or not is_postgres(self._connection):
            return
        rows = await _WHOLE_OPEN_QUOTES_OF_MANY_FOR_UPDATE.all(
            self._connection, {"b_opportunities": list(wanted)}
        )
        ahead: dict[UUID, list[Quote]] = {deal: [] for deal in wanted}
        for quote in self._keep_whole(rows):
            ahead[quote.opportunity_id].append(quote)
        self._open_ahead.update(ahead)

    async def get(self, quote_id: UUID) -> Quote:
        if is_postgres(self._connection):
            found = await self._whole(_WHOLE_QUOTE_FOR_UPDATE, {"b_id": quote_id})
        else:
            rows = (await self._connection.execute(_SELECT_QUOTE, {"b_id": quote_id})).all()
            found = await self._with_lines(rows)
        if not found:
            raise QuoteNotFound(quote_id)
        return found[0]

    async def get_with_deal(self, quote_id: UUID) -> tuple[Quote, KnownOpportunity | None]:
        """The quote, locked (not in one-write mode, where its versioned save refuses a
        change made in between), and what is known of its deal (None when nothing yet):
        in one statement on PostgreSQL."""
        if not is_postgres(self._connection):
            quote = await self.get(quote_id)
            row = await _KNOWN.get(self._connection, quote.opportunity_id)
            return quote, None if row is None else _to_known(row)
        query = (
            _WHOLE_QUOTE_AND_DEAL_UNLOCKED
            if is_one_write(self._connection)
            else _WHOLE_QUOTE_AND_DEAL_FOR_UPDATE
        )
        rows = await query.all(self._connection, {"b_id": quote_id})
        if not rows:
            raise QuoteNotFound(quote_id)
        (quote,) = self._keep_whole(rows)
        (row,) = rows
        return quote, None if row.deal_id is None else _to_known(row, prefix="deal_")

    async def get_to_change(self, quote_id: UUID) -> tuple[Quote, KnownOpportunity | None]:
        """`get_with_deal`, for a change that ends with its versioned write: in one-write
        mode a copy of the quote and of the deal its last change here was decided on, if
        kept, instead of a read. The write refuses copies out of date, and the unit of
        work runs the change again from a read (`StaleCopy`)."""
        copies = self._copies
        if copies is not None and self._served is not None and is_one_write(self._connection):
            kept = copies.quotes.take(quote_id)
            if kept is not None:
                quote, deal = kept
                self._served(lambda: copies.quotes.refused(quote_id))
                self._on_copy[quote_id] = self.decided_on[quote_id] = deal
                self._loaded[quote_id] = quote.version
                return quote, deal
        quote, found = await self.get_with_deal(quote_id)
        if found is not None:
            self.decided_on[quote_id] = found
        return quote, found

    async def open_quotes_of(self, opportunity_id: UUID) -> list[Quote]:
        ahead = self._open_ahead.pop(opportunity_id, None)
        if ahead is not None:
            return ahead
        if is_postgres(self._connection):
            return await self._whole(
                _WHOLE_OPEN_QUOTES_FOR_UPDATE, {"b_opportunity": opportunity_id}
            )
        rows = (
            await self._connection.execute(_OPEN_QUOTES_OF, {"b_opportunity": opportunity_id})
        ).all()
        return await self._with_lines(rows)

    async def _whole(self, query: DirectStatement, parameters: dict[str, Any]) -> list[Quote]:
        """Quotes read with their lines in one statement (PostgreSQL), locked."""
        return self._keep_whole(await query.all(self._connection, parameters))

    def _keep_whole(self, rows: Sequence[Row[Any]]) -> list[Quote]:
        """Quotes of rows read with `_WHOLE_LINES`, remembered at the version read."""
        loaded = [
            to_quote(r, [_line_from_array(line) for line in r.whole_lines or ()]) for r in rows
        ]
        for quote in loaded:
            self._loaded[quote.id] = quote.version
        return loaded

    async def due_for_expiry(self, now: datetime, limit: int) -> list[Quote]:
        query = (
            select(quotes)
            .where(quotes.c.status == QuoteStatus.PRESENTED.value, quotes.c.valid_until <= now)
            .order_by(quotes.c.valid_until)
            .limit(limit)
        )
        if is_postgres(self._connection):
            query = query.with_for_update(skip_locked=True)
        return await self._with_lines((await self._connection.execute(query)).all())

    async def awaiting_answer(self, now: datetime, limit: int) -> list[Quote]:
        """Quotes whose acceptance the opportunity has not answered by its due time,
        locked, skipping those another transaction holds (another replica's job, or the
        answer being applied)."""
        query = (
            select(quotes)
            .where(
                quotes.c.status == QuoteStatus.ACCEPT_PENDING.value,
                quotes.c.acceptance_answer_due_at <= now,
            )
            .order_by(quotes.c.acceptance_answer_due_at)
            .limit(limit)
        )
        if is_postgres(self._connection):
            query = query.with_for_update(skip_locked=True)
        return await self._with_lines((await self._connection.execute(query)).all())

    async def _with_lines(self, rows: Sequence[Row[Any]]) -> list[Quote]:
        lines = await lines_of(self._connection, [r.id for r in rows])
        loaded = [to_quote(r, lines.get(r.id, [])) for r in rows]
        for quote in loaded:
            self._loaded[quote.id] = quote.version
        return loaded

    async def add(self, quote: Quote) -> None:
        await self.add_at_commit(quote).alone(self._connection)

    def add_at_commit(self, quote: Quote) -> LastWrite:
        """The new quote and its lines, for the commit to send with the outbox rows
        (`UnitOfWork.commit`). It raises `ReadChanged` when its deal is no longer open,
        which only a work that read the deal unlocked can meet, and `StaleCopy` when the
        deal was a copy its row no longer matches (`KnownOpportunities.copy_refused`)."""
        lines = [_line_row(line) for line in quote.lines]
        gate: dict[str, Any] = {"g_opportunity_id": quote.opportunity_id}
        insert_quote = _INSERT_QUOTE_WITH_LINES
        refused = _deal_closed
        if self._deals is not None:
            deal = self._deals.decided.get(quote.opportunity_id)
            if deal is not None:
                self.decided_on[quote.id] = deal
                if quote.opportunity_id in self._deals.copied:
                    insert_quote = _INSERT_QUOTE_ON_COPY
                    gate.update(_deal_guard(deal))
                    refused = self._deals.copy_refused
        last = insert_quote.last_add(_quote_row(quote), lines, gate, refused)
        quote.lines_changed = False
        self._loaded[quote.id] = quote.version
        self.written[quote.id] = quote
        return last

    async def save(self, quote: Quote) -> None:
        last = await self.save_at_commit(quote)
        if last is not None:
            await last.alone(self._connection)

    async def save_at_commit(self, quote: Quote) -> LastWrite | None:
        """Write the quote's lines if they changed; its row's versioned save is returned,
        for the commit to send with the outbox rows (`UnitOfWork.commit`). None when the
        quote did not change."""
        loaded = self._loaded[quote.id]
        deal_copy = self._on_copy.get(quote.id)
        if quote.version == loaded:
            if deal_copy is not None and self._copies is not None:
                # No versioned write will check the copies the answer is made of: the
                # run again reads (the copy is forgotten; it may not be out of date).
                self._copies.quotes.forget(quote.id)
                raise StaleCopy(f"nothing written checks the copy of quote {quote.id}")
            return None
        # What was read ahead of the deal's quotes is not what they are any more.
        self._open_ahead.pop(quote.opportunity_id, None)
        changes = _quote_row(quote)
        del changes["id"]
        if deal_copy is None:
            last = _VERSIONED_QUOTE.last_save(quote.id, loaded, changes)
        else:
            last = _VERSIONED_QUOTE_ON_COPY.last_save(
                quote.id, loaded, changes, _deal_guard(deal_copy)
            )
        self._loaded[quote.id] = quote.version
        self.written[quote.id] = quote
        await self._write_lines(quote)
        return last

    async def _write_lines(self, quote: Quote) -> None:
        if not quote.lines_changed:
            return
        await self._connection.execute(_DELETE_LINES, {"b_id": quote.id})
        if quote.lines:
            await _INSERT_LINES.each(
                self._connection,
                [{"quote_id": quote.id, **_line_row(line)} for line in quote.lines],
            )
        quote.lines_changed = False


def _line_row(line: QuoteLine) -> dict[str, Any]:
    """A quote line's columns, but the quote it belongs to."""
    return {
        "line_no": line.line_no,
        "product_id": line.product_id,
        "bundle_id": line.bundle_id,
        "sku": line.sku,
        "description": line.description,
        "quantity": line.quantity,
        "unit_price_amount": line.unit_price.amount,
        "unit_price_currency": line.unit_price.currency,
        "discount_percent": line.discount_percent,
        "billing": line.billing,
        "billing_period": line.billing_period.value if line.billing_period else None,
    }


class QuoteQueries:
    """Reads for the API; never locking."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def find(self, quote_id: UUID) -> Quote | None:
        row = (await self._connection.execute(_SELECT_QUOTE, {"b_id": quote_id})).first()
        if row is None:
            return None
        lines = await lines_of(self._connection, [row.id])
        return to_quote(row, lines.get(row.id, []))

    async def of_opportunity(self, opportunity_id: UUID, status: QuoteStatus | None) -> list[Quote]:
        query = select(quotes).where(quotes.c.opportunity_id == opportunity_id)
        if status is not None:
            query = query.where(quotes.c.status == status.value)
        rows = (
            await self._connection.execute(query.order_by(quotes.c.created_at, quotes.c.id))
        ).all()
        lines = await lines_of(self._connection, [r.id for r in rows])
        return [to_quote(r, lines.get(r.id, [])) for r in rows]

    async def awaiting_answer_since(
        self, requested_before: datetime, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Quote]:
        """Quotes awaiting the opportunity's answer to an acceptance made before
        `requested_before`, oldest first, after the (requested_at, id) `after`; no lines."""
        query = select(quotes).where(
            quotes.c.status == QuoteStatus.ACCEPT_PENDING.value,
            quotes.c.acceptance_requested_at <= requested_before,
        )
        if after is not None:
            query = query.where(
                tuple_(quotes.c.acceptance_requested_at, quotes.c.id) > tuple_(*after)
            )
        query = query.order_by(quotes.c.acceptance_requested_at, quotes.c.id).limit(limit)
        return [to_quote(r, []) for r in await self._connection.execute(query)]


async def lines_of(
    connection: AsyncConnection, quote_ids: Sequence[UUID]
) -> dict[UUID, list[QuoteLine]]:
    if not quote_ids:
        return {}
    rows = await connection.execute(_LINES_OF, {"b_ids": list(quote_ids)})
    found: dict[UUID, list[QuoteLine]] = {}
    for r in rows:
        found.setdefault(r.quote_id, []).append(
            QuoteLine(
                line_no=r.line_no,
                description=r.description,
                quantity=plain(r.quantity),
                unit_price=Money.exact(r.unit_price_amount, r.unit_price_currency),
                discount_percent=plain(r.discount_percent),
                product_id=r.product_id,
                bundle_id=r.bundle_id,
                sku=r.sku,
                billing=r.billing,
                billing_period=BillingPeriod(r.billing_period) if r.billing_period else None,
            )
        )
    return found


def _line_from_array(line: Sequence[Any]) -> QuoteLine:
    """A line as `_LINE_FIELDS` aggregates it: ids and amounts as text."""
    (
        line_no,
        product_id,
        bundle_id,
        sku,
        description,
        quantity,
        unit_price_amount,
        unit_price_currency,
        discount_percent,
        billing,
        billing_period,
    ) = line
    return QuoteLine(
        line_no=line_no,
        description=description,
        quantity=plain(Decimal(quantity)),
        unit_price=Money.exact(Decimal(unit_price_amount), unit_price_currency),
        discount_percent=plain(Decimal(discount_percent)),
        product_id=UUID(product_id) if product_id else None,
        bundle_id=UUID(bundle_id) if bundle_id else None,
        sku=sku,
        billing=billing,
        billing_period=BillingPeriod(billing_period) if billing_period else None,
    )


def to_quote(row: Row[Any], lines: list[QuoteLine]) -> Quote:
    return Quote(
        id=row.id,
        opportunity_id=row.opportunity_id,
        status=QuoteStatus(row.status),
        currency=row.currency,
        lines=lines,
        valid_until=row.valid_until,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        status_reason=row.status_reason,
        approved_by=row.approved_by,
        accepted_at=row.accepted_at,
        acceptance=None
        if row.acceptance_requested_at is None
        else AcceptanceRequest(
            requested_by=row.acceptance_requested_by,
            requested_at=row.acceptance_requested_at,
            via=row.acceptance_via,
            answer_due_at=row.acceptance_answer_due_at,
            asked_again=row.acceptance_asked_again,
        ),
    )


def _quote_row(quote: Quote) -> dict[str, Any]:
    return {
        "id": quote.id,
        "opportunity_id": quote.opportunity_id,
        "status": quote.status.value,
        "currency": quote.currency,
        "valid_until": quote.valid_until,
        "status_reason": quote.status_reason,
        "approved_by": quote.approved_by,
        "accepted_at": quote.accepted_at,
        "created_by": quote.created_by,
        "created_at": quote.created_at,
        "updated_at": quote.updated_at,
        "version": quote.version,
        **_acceptance_row(quote.acceptance),
    }


def _acceptance_row(request: AcceptanceRequest | None) -> dict[str, Any]:
    return {
        "acceptance_requested_by": request.requested_by if request else None,
        "acceptance_requested_at": request.requested_at if request else None,
        "acceptance_via": request.via if request else None,
        "acceptance_answer_due_at": request.answer_due_at if request else None,
        "acceptance_asked_again": request.asked_again if request else None,
    }


class CatalogRepository:
    """Products and bundles. Reads take no lock: a save is conditional on the version
    read (`VersionedTable`), so a concurrent change makes it fail instead of being lost."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._loaded: dict[UUID, int] = {}

    async def product(self, product_id: UUID) -> Product:
        row = (
            await self._connection.execute(select(products).where(products.c.id == product_id))
        ).first()
        if row is None:
            raise ProductNotFound(product_id)
        product = _to_product(row)
        self._loaded[product.id] = product.version
        return product

    async def products_by_id(self, ids: Sequence[UUID]) -> dict[UUID, Product]:
        if not ids:
            return {}
        rows = await self._connection.execute(select(products).where(products.c.id.in_(ids)))
        return {r.id: _to_product(r) for r in rows}

    async def product_list(self, include_retired: bool) -> list[Product]:
        query = select(products).order_by(products.c.sku)
        if not include_retired:
            query = query.where(products.c.retired_at.is_(None))
        return [_to_product(r) for r in await self._connection.execute(query)]

    async def add_product(self, product: Product) -> None:
        await self._connection.execute(insert(products).values(**_product_row(product)))
        self._loaded[product.id] = product.version

    async def save_product(self, product: Product) -> None:
        """Raises `StaleVersion` when the product changed since this unit of work read it."""
        changes = _product_row(product)
        del changes["id"]
        loaded = self._loaded[product.id]
        await _VERSIONED_PRODUCT.save(self._connection, product.id, loaded, changes)
        self._loaded[product.id] = product.version

    async def sku_taken(self, sku: str, except_id: UUID | None = None) -> bool:
        for table in (products, bundles):
            query = select(table.c.id).where(table.c.sku == sku)
            if except_id is not None:
                query = query.where(table.c.id != except_id)
            if (await self._connection.execute(query)).first() is not None:
                return True
        return False

    async def bundle(self, bundle_id: UUID) -> Bundle:
        row = (
            await self._connection.execute(select(bundles).where(bundles.c.id == bundle_id))
        ).first()
        if row is None:
            raise BundleNotFound(bundle_id)
        bundle = (await self._bundles_with_items([row]))[0]
        self._loaded[bundle.id] = bundle.version
        return bundle

    async def bundles_by_id(self, ids: Sequence[UUID]) -> dict[UUID, Bundle]:
        if not ids:
            return {}
        rows = (await self._connection.execute(select(bundles).where(bundles.c.id.in_(ids)))).all()
        return {b.id: b for b in await self._bundles_with_items(rows)}

    async def bundle_list(self, include_retired: bool) -> list[Bundle]:
        query = select(bundles).order_by(bundles.c.sku)
        if not include_retired:
            query = query.where(bundles.c.retired_at.is_(None))
        return await self._bundles_with_items((await self._connection.execute(query)).all())

    async def _bundles_with_items(self, rows: Sequence[Row[Any]]) -> list[Bundle]:
        items: dict[UUID, list[BundleItem]] = {}
        if rows:
            found = await self._connection.execute(
                select(bundle_items)
                .where(bundle_items.c.bundle_id.in_([r.id for r in rows]))
                .order_by(bundle_items.c.bundle_id, bundle_items.c.position)
            )
            for item in found:
                items.setdefault(item.bundle_id, []).append(
                    BundleItem(product_id=item.product_id, quantity=item.quantity)
                )
        return [
            Bundle(
                id=r.id,
                sku=r.sku,
                name=r.name,
                description=r.description,
                price=Money(amount=r.price_amount, currency=r.price_currency),
                billing_period=BillingPeriod(r.billing_period),
                items=items.get(r.id, []),
                retired_at=r.retired_at,
                created_at=r.created_at,
                updated_at=r.updated_at,
                version=r.version,
            )
            for r in rows
        ]

    async def add_bundle(self, bundle: Bundle) -> None:
        await self._connection.execute(insert(bundles).values(**_bundle_row(bundle)))
        await self._write_items(bundle)
        self._loaded[bundle.id] = bundle.version

    async def save_bundle(self, bundle: Bundle) -> None:
        """Raises `StaleVersion` when the bundle changed since this unit of work read it."""
        changes = _bundle_row(bundle)
        del changes["id"]
        loaded = self._loaded[bundle.id]
        # The conditional update also locks the row, so the items below are rewritten by
        # one transaction at a time.
        await _VERSIONED_BUNDLE.save(self._connection, bundle.id, loaded, changes)
        self._loaded[bundle.id] = bundle.version
        await self._connection.execute(
            delete(bundle_items).where(bundle_items.c.bundle_id == bundle.id)
        )
        await self._write_items(bundle)

    async def _write_items(self, bundle: Bundle) -> None:
        await self._connection.execute(
            insert(bundle_items),
            [
                {
                    "bundle_id": bundle.id,
                    "position": i,
                    "product_id": item.product_id,
                    "quantity": item.quantity,
                }
                for i, item in enumerate(bundle.items)
            ],
        )


def _to_product(r: Row[Any]) -> Product:
    return Product(
        id=r.id,
        sku=r.sku,
        name=r.name,
        description=r.description,
        list_price=Money(amount=r.list_price_amount, currency=r.list_price_currency),
        billing=r.billing,
        billing_period=BillingPeriod(r.billing_period) if r.billing_period else None,
        retired_at=r.retired_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
        version=r.version,
    )


def _product_row(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "list_price_amount": p.list_price.amount,
        "list_price_currency": p.list_price.currency,
        "billing": p.billing,
        "billing_period": p.billing_period.value if p.billing_period else None,
        "retired_at": p.retired_at,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "version": p.version,
    }


def _bundle_row(b: Bundle) -> dict[str, Any]:
    return {
        "id": b.id,
        "sku": b.sku,
        "name": b.name,
        "description": b.description,
        "price_amount": b.price.amount,
        "price_currency": b.price.currency,
        "billing_period": b.billing_period.value,
        "retired_at": b.retired_at,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
        "version": b.version,
    }


class KnownOpportunities:
    """The projection of opportunities this service keeps from their events."""

    def __init__(
        self,
        connection: AsyncConnection,
        copies: QuoteCopies | None = None,
        served: Served | None = None,
    ) -> None:
        self._connection = connection
        self._held = HeldRows()
        self._copies = copies
        self._served = served
        self.copied: set[UUID] = set()
        """Deals served as copies, which a new quote's insert checks."""
        self.decided: dict[UUID, KnownOpportunity] = {}
        """Deals as this work leaves them, written or decided on: kept when it commits."""

    async def get_to_quote(self, opportunity_id: UUID) -> KnownOpportunity | None:
        """`get(for_share=True)`, for a new quote: in one-write mode a copy of the deal as
        this process last knew it, if kept, instead of a read. The quote's insert checks
        the copy against the row (`QuoteRepository.add_at_commit`)."""
        copies = self._copies
        if copies is not None and self._served is not None and is_one_write(self._connection):
            copied = copies.deals.take(opportunity_id)
            if copied is not None:
                self._served(lambda: copies.deals.refused(opportunity_id))
                self.copied.add(opportunity_id)
                self.decided[opportunity_id] = copied
                return copied
        deal = await self.get(opportunity_id, for_share=True)
        if deal is not None:
            self.decided[opportunity_id] = deal
        return deal

    async def copy_refused(self, _connection: AsyncConnection) -> None:
        """A new quote's insert found the deal's row other than its copy said: the copy
        is forgotten and the draft runs again from a read. (Its other gate, an open deal,
        is decided on that read.)"""
        assert self._copies is not None, "a copy is served only where copies are kept"
        for opportunity_id in self.copied:
            self._copies.deals.refused(opportunity_id)
        raise StaleCopy("the deal's row is not the one its copy was taken from")

    async def lock_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock these deals' rows in one statement and hold them until `write_held`."""
        await _KNOWN.lock_ahead(self._connection, opportunity_ids, self._held)

    async def write_held(self) -> None:
        await _KNOWN.write_held(self._connection, self._held)

    async def get(
        self, opportunity_id: UUID, *, for_share: bool = False
    ) -> KnownOpportunity | None:
        """`for_share`: hold the row until commit, so that an `opportunity.won` or `.lost`
        applied meanwhile waits for this transaction and then sees what it created. Not
        in one-write mode, which has no transaction to hold it in: there the new quote's
        insert holds it (`add_at_commit`)."""
        share = for_share and not is_one_write(self._connection)
        row = await _KNOWN.get(self._connection, opportunity_id, share=share, held=self._held)
        return None if row is None else _to_known(row)

    async def lock_or_add(self, unseen: KnownOpportunity, now: datetime) -> KnownOpportunity:
        """The deal's row, locked until commit (an event's read-merge-write then never
        interleaves with another's); `unseen` is added first when there is none. When
        another transaction adds the row at the same moment, the insert waits for it
        and does nothing, and its committed row is the one locked."""
        row = await _KNOWN.lock_or_add(self._connection, _known_row(unseen, now), self._held)
        return _to_known(row)

    async def save(self, deal: KnownOpportunity, now: datetime) -> None:
        await _KNOWN.save(self._connection, _known_row(deal, now), self._held)
        self.decided[deal.id] = deal


def _to_known(row: Row[Any], prefix: str = "") -> KnownOpportunity:
    """The deal of a projection row; `prefix`: its columns' prefix, read beside a quote."""
    field = row._mapping
    return KnownOpportunity(
        id=field[f"{prefix}id"],
        stage=Stage(field[f"{prefix}stage"]),
        owners=list(field[f"{prefix}owners"]),
        team_id=field[f"{prefix}team_id"],
        created_by=field[f"{prefix}created_by"],
        won_quote_id=field[f"{prefix}won_quote_id"],
        shares=shares_from_document(field[f"{prefix}shares"]),
        sequences=AppliedSequences.from_document(field[f"{prefix}applied_sequences"]),
    )


def _known_row(deal: KnownOpportunity, now: datetime) -> dict[str, Any]:
    return {
        "id": deal.id,
        "stage": deal.stage.value,
        "owners": list(deal.owners),
        "team_id": deal.team_id,
        "created_by": deal.created_by,
        "won_quote_id": deal.won_quote_id,
        "shares": shares_to_document(deal.shares),
        "applied_sequences": deal.sequences.to_document(),
        "updated_at": now,
    }
