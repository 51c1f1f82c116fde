"""The read side's SQL: sums by stage, month, group and currency, and the rates.

Every query sums in the database and hands `domain.figures` small rows (a few per
stage, month or group and currency), so a report over 100,000 deals moves a few
hundred numbers, not the deals. Visibility (`visible_deals`) and the caller's filters
are conditions of the same query.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    delete,
    exists,
    extract,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.auth import Principal
from dealflow_common.contracts.opportunity import Share, Stage
from dealflow_common.db import reading
from dealflow_common.deal_access import shares_from_document
from dealflow_common.messaging.tables import inbox
from dealflow_reporting.adapters.access import (
    PERSONAL_PARTS,
    own_deals_outside_teams,
    visible_deals,
)
from dealflow_reporting.adapters.tables import (
    deal_owner_sums,
    deal_owners,
    deal_shares,
    deal_sums,
    deals,
    exchange_rates,
    forecast_snapshot_lines,
    forecast_snapshots,
    stage_changes,
)
from dealflow_reporting.domain.deal import LOST, WON
from dealflow_reporting.domain.figures import (
    FUNNEL,
    OPEN_STAGES,
    ClosedDeals,
    CurrencySum,
    MonthSum,
)
from dealflow_reporting.domain.filters import DealFilter, GroupBy
from dealflow_reporting.domain.periods import Granularity, Period
from dealflow_reporting.domain.rates import ExchangeRate

_OPEN = [stage.value for stage in OPEN_STAGES]


def _visibility_parts(principal: Principal | None) -> list[str | None]:
    """The disjoint parts a caller's view of the deals is read in: all at once for those
    who see everything; else their teams' deals, the deals they own outside their teams,
    those they created without owning, and those shared with them or one of their teams
    that are in none of the other parts, each an indexed lookup, where the rule as
    one condition (an OR with an EXISTS) makes the database read every deal."""
    if principal is None or principal.sees_everything:
        return [None]
    return [*(["teams"] if principal.teams else []), *PERSONAL_PARTS]


@dataclass(frozen=True, slots=True)
class DealRow:
    """One deal as a customer's history lists it (its own currency, never converted)."""

    opportunity_id: uuid.UUID
    title: str
    customer_id: str
    customer_name: str
    stage: str
    currency: str
    amount_minor: int
    probability: int
    expected_close_date: date | None
    owners: list[str]
    team_id: str | None
    created_by: str
    shares: list[Share]
    created_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    lost_reason: str | None


@dataclass(frozen=True, slots=True)
class SnapshotLine:
    month: str
    dimension: str
    group_key: str
    sums: CurrencySum


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: uuid.UUID
    taken_at: datetime
    lines: list[SnapshotLine]


def _conditions(
    principal: Principal | None, where: DealFilter, *, personal: str | None = None
) -> list[ColumnElement[bool]]:
    """`personal` ("owned", "created", "shared"): only that part of the deals the principal sees
    outside their teams (what the kept sums, keyed by team, cannot answer)."""
    conditions: list[ColumnElement[bool]] = [
        deals.c.created_at.is_not(None),
        deals.c.purged_at.is_(None),
    ]
    if principal is not None:
        visible: ColumnElement[bool] | None
        if personal == "teams":
            visible = deals.c.team_id.in_(sorted(principal.teams))
        elif personal is not None:
            visible = own_deals_outside_teams(principal, personal)
        else:
            visible = visible_deals(principal)
        if visible is not None:
            conditions.append(visible)
    if where.owner is not None:
        owner = deal_owners.alias("filtered_owner")
        conditions.append(
            exists(
                select(owner.c.opportunity_id)
                .where(
                    owner.c.opportunity_id == deals.c.opportunity_id, owner.c.owner == where.owner
                )
                .correlate(deals)
            )
        )
    if where.team is not None:
        conditions.append(deals.c.team_id == where.team)
    if where.customer is not None:
        conditions.append(deals.c.customer_id == where.customer)
    if where.lead_origin is not None:
        conditions.append(deals.c.lead_origin == where.lead_origin.value)
    if where.expected_close_from is not None:
        conditions.append(deals.c.expected_close_date >= where.expected_close_from)
    if where.expected_close_to is not None:
        conditions.append(deals.c.expected_close_date <= where.expected_close_to)
    return conditions


def _grouped(
    query: Select[Any], group_by: GroupBy, only_owner: str | None = None
) -> tuple[Select[Any], ColumnElement[Any]]:
    """The query joined to what it is grouped by, and the group's column. By owner and
    of one owner (`only_owner`), only that owner's line: not the co-owners' of their
    deals."""
    if group_by == GroupBy.OWNER:
        # Deals waiting in a team's queue have no owner: they count as the None group.
        on = deal_owners.c.opportunity_id == deals.c.opportunity_id
        if only_owner is not None:
            on = and_(on, deal_owners.c.owner == only_owner)
        joined = query.outerjoin(deal_owners, on)
        return joined, deal_owners.c.owner
    if group_by == GroupBy.TEAM:
        return query, deals.c.team_id
    return query, literal(None).label("group_key")


def _int(value: Any) -> int:
    return int(value or 0)


def _answerable_from_sums(where: DealFilter) -> bool:
    """The kept sums are keyed by owner, team, lead origin, stage, currency and month: a
    report of one customer or of a range of days reads the deals."""
    return (
        where.customer is None
        and where.expected_close_from is None
        and where.expected_close_to is None
    )


def _month_number(day: date) -> int:
    return day.year * 100 + day.month


class ReportReader:
    def __init__(self, engine: AsyncEngine, *, use_sums: bool = True) -> None:
        self._engine = engine
        self._use_sums = use_sums

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    # --- pipeline and forecast ----------------------------------------------------------

    def _sums_query(
        self, principal: Principal | None, where: DealFilter, kind: str, sums: Table
    ) -> list[ColumnElement[bool]] | None:
        """Conditions on the kept sums for the principal's teams' part of a report; None
        when the principal has no team (only the personal part is left)."""
        conditions: list[ColumnElement[bool]] = [sums.c.kind == kind]
        if where.owner is not None:
            conditions.append(sums.c.owner_key == where.owner)
        if where.team is not None:
            conditions.append(sums.c.team_key == where.team)
        if where.lead_origin is not None:
            conditions.append(sums.c.lead_origin_key == where.lead_origin.value)
        if principal is not None and not principal.sees_everything:
            if not principal.teams:
                return None
            conditions.append(sums.c.team_key.in_(sorted(principal.teams)))
        return conditions

    def _personal(self, principal: Principal | None) -> bool:
        """Whether the deals' part of a report read beside the sums is the personal one."""
        return principal is not None and not principal.sees_everything

    async def pipeline(
        self, principal: Principal, where: DealFilter
    ) -> dict[Stage, list[CurrencySum]]:
        if not (self._use_sums and _answerable_from_sums(where)):
            merged: dict[Stage, list[CurrencySum]] = defaultdict(list)
            for part in _visibility_parts(principal):
                for stage, parts in (await self._pipeline_of_deals(principal, where, part)).items():
                    merged[stage].extend(parts)
            return merged
        found: dict[Stage, list[CurrencySum]] = defaultdict(list)
        if self._personal(principal):
            for part in PERSONAL_PARTS:
                for stage, parts in (await self._pipeline_of_deals(principal, where, part)).items():
                    found[stage].extend(parts)
        sums = deal_owner_sums if where.owner is not None else deal_sums
        conditions = self._sums_query(principal, where, "open", sums)
        if conditions is None:
            return found
        query = (
            select(
                sums.c.stage,
                sums.c.currency,
                func.sum(sums.c.deals),
                func.sum(sums.c.amount_minor),
                func.sum(sums.c.weighted_centi_minor),
            )
            .where(*conditions)
            .group_by(sums.c.stage, sums.c.currency)
        )
        async with self._read() as connection:
            for stage, currency, count, amount, weighted in await connection.execute(query):
                if _int(count):
                    found[Stage(stage)].append(
                        CurrencySum(currency, _int(count), _int(amount), _int(weighted))
                    )
        return found

    async def _pipeline_of_deals(
        self, principal: Principal, where: DealFilter, personal: str | None
    ) -> dict[Stage, list[CurrencySum]]:
        found: dict[Stage, list[CurrencySum]] = defaultdict(list)
        query = (
            select(
                deals.c.stage,
                deals.c.currency,
                func.count(),
                func.sum(deals.c.amount_minor),
                func.sum(deals.c.amount_minor * deals.c.probability),
            )
            .where(deals.c.stage.in_(_OPEN), *_conditions(principal, where, personal=personal))
            .group_by(deals.c.stage, deals.c.currency)
        )
        async with self._read() as connection:
            for stage, currency, count, amount, weighted in await connection.execute(query):
                found[Stage(stage)].append(
                    CurrencySum(currency, _int(count), _int(amount), _int(weighted))
                )
        return found

    async def expected_by_month(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        first: date | None,
        last: date | None,
    ) -> list[MonthSum]:
        """Open deals by the month of their expected close date (inclusive bounds)."""
        return await self._by_month_of(
            "open", self._expected_of_deals, principal, where, group_by, first, last
        )

    async def _expected_of_deals(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        first: date | None,
        last: date | None,
        *,
        personal: str | None = None,
    ) -> list[MonthSum]:
        close = deals.c.expected_close_date
        conditions: list[ColumnElement[bool]] = [deals.c.stage.in_(_OPEN), close.is_not(None)]
        if first is not None:
            conditions.append(close >= first)
        if last is not None:
            conditions.append(close <= last)
        return await self._by_month(
            principal,
            where,
            group_by,
            close,
            deals.c.currency,
            deals.c.amount_minor,
            func.sum(deals.c.amount_minor * deals.c.probability),
            conditions,
            personal,
        )

    async def won_by_month(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        first: date | None,
        last: date | None,
    ) -> list[MonthSum]:
        """Won deals' value (the accepted quote's total when won through one) by the
        month of the close."""
        return await self._by_month_of(
            "won", self._won_of_deals, principal, where, group_by, first, last
        )

    async def _by_month_of(
        self,
        kind: str,
        of_deals: Callable[..., Awaitable[list[MonthSum]]],
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        first: date | None,
        last: date | None,
    ) -> list[MonthSum]:
        """From the kept sums when the filter allows, else from the deals, one disjoint
        part of the caller's view at a time."""
        if self._use_sums and _answerable_from_sums(where):
            return await self._months_of_sums(principal, where, group_by, kind, first, last)
        found: list[MonthSum] = []
        for part in _visibility_parts(principal):
            found += await of_deals(principal, where, group_by, first, last, personal=part)
        return found

    async def _won_of_deals(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        first: date | None,
        last: date | None,
        *,
        personal: str | None = None,
    ) -> list[MonthSum]:
        closed = deals.c.closed_on
        conditions: list[ColumnElement[bool]] = [
            deals.c.outcome == WON,
            deals.c.won_currency.is_not(None),
        ]
        if first is not None:
            conditions.append(closed >= first)
        if last is not None:
            conditions.append(closed <= last)
        return await self._by_month(
            principal,
            where,
            group_by,
            closed,
            deals.c.won_currency,
            deals.c.won_amount_minor,
            literal(0),
            conditions,
            personal,
        )

    async def _months_of_sums(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        kind: str,
        first: date | None,
        last: date | None,
    ) -> list[MonthSum]:
        """`expected_by_month` or `won_by_month` from the kept sums (the principal's
        teams), with the deals they see outside their teams read from `deals`."""
        found: list[MonthSum] = []
        if self._personal(principal):
            of_deals = self._expected_of_deals if kind == "open" else self._won_of_deals
            for part in PERSONAL_PARTS:
                found += await of_deals(principal, where, group_by, first, last, personal=part)
        # One owner's deals, or a break-down by owner: the sums per owner, where a deal
        # counts once for each owner (as the deals joined to their owners do).
        per_owner = group_by == GroupBy.OWNER or where.owner is not None
        sums = deal_owner_sums if per_owner else deal_sums
        conditions = self._sums_query(principal, where, kind, sums)
        if conditions is None:
            return found
        number = sums.c.year * 100 + sums.c.month
        conditions.append(sums.c.year > 0)  # deals with no expected close date
        if first is not None:
            conditions.append(number >= _month_number(first))
        if last is not None:
            conditions.append(number <= _month_number(last))
        group: ColumnElement[Any] = literal("").label("g")
        if group_by == GroupBy.TEAM:
            group = sums.c.team_key
        elif group_by == GroupBy.OWNER:
            group = sums.c.owner_key
        query = (
            select(
                sums.c.year,
                sums.c.month,
                sums.c.currency,
                func.sum(sums.c.deals),
                func.sum(sums.c.amount_minor),
                func.sum(sums.c.weighted_centi_minor),
                group,
            )
            .where(*conditions)
            .group_by(sums.c.year, sums.c.month, sums.c.currency, group)
        )
        async with self._read() as connection:
            for y, m, c, count, amount, weighted, g in await connection.execute(query):
                if _int(count):
                    found.append(
                        MonthSum(
                            int(y),
                            int(m),
                            g or None,
                            CurrencySum(c, _int(count), _int(amount), _int(weighted)),
                        )
                    )
        return found

    async def _by_month(
        self,
        principal: Principal | None,
        where: DealFilter,
        group_by: GroupBy,
        day: ColumnElement[Any],
        currency: ColumnElement[Any],
        amount: ColumnElement[Any],
        weighted: ColumnElement[Any],
        conditions: Sequence[ColumnElement[bool]],
        personal: str | None = None,
    ) -> list[MonthSum]:
        year = extract("year", day).label("year")
        month = extract("month", day).label("month")
        query, group = _grouped(
            select(year, month, currency, func.count(), func.sum(amount), weighted),
            group_by,
            where.owner,
        )
        query = query.add_columns(group).where(
            *conditions, *_conditions(principal, where, personal=personal)
        )
        query = query.group_by(year, month, currency, group)
        async with self._read() as connection:
            rows = await connection.execute(query)
            return [
                MonthSum(
                    int(y),
                    int(m),
                    g,
                    CurrencySum(c, _int(count), _int(total), _int(w)),
                )
                for y, m, c, count, total, w, g in rows
            ]

    # --- analytics ----------------------------------------------------------------------

    async def closed_deals(
        self,
        principal: Principal,
        where: DealFilter,
        group_by: GroupBy,
        granularity: Granularity | None,
        first: date | None,
        last: date | None,
    ) -> dict[tuple[str | None, str | None], ClosedDeals]:
        """Deals closed (won or lost) on days from `first` to `last`, per (period label,
        group): the facts `figures.analytics` needs."""
        closed = deals.c.closed_on
        conditions: list[ColumnElement[bool]] = [deals.c.outcome.is_not(None), closed.is_not(None)]
        if first is not None:
            conditions.append(closed >= first)
        if last is not None:
            conditions.append(closed <= last)
        conditions += _conditions(principal, where)
        year, month = extract("year", closed), extract("month", closed)

        def key(y: Any, m: Any, g: Any) -> tuple[str | None, str | None]:
            label = Period.containing(int(y), int(m), granularity).label if granularity else None
            return label, g

        outcomes: dict[tuple[str | None, str | None], dict[str, Any]] = defaultdict(
            lambda: {
                "won": 0,
                "lost": 0,
                "cycle": 0.0,
                "won_sums": [],
                "reached": defaultdict(int),
                "days": {},
                "reasons": defaultdict(int),
            }
        )
        async with self._read() as connection:
            query, groups = _grouped_query(
                select(
                    year,
                    month,
                    deals.c.outcome,
                    func.count(),
                    func.sum(case((deals.c.outcome == WON, deals.c.cycle_days), else_=0.0)),
                ),
                group_by,
                conditions,
                where.owner,
            )
            for y, m, outcome, count, cycle, g in await connection.execute(
                query.group_by(year, month, deals.c.outcome, *groups)
            ):
                entry = outcomes[key(y, m, g)]
                entry["won" if outcome == WON else "lost"] += _int(count)
                entry["cycle"] += float(cycle or 0.0)
            query, groups = _grouped_query(
                select(
                    year,
                    month,
                    deals.c.won_currency,
                    func.count(),
                    func.sum(deals.c.won_amount_minor),
                ),
                group_by,
                [*conditions, deals.c.outcome == WON, deals.c.won_currency.is_not(None)],
                where.owner,
            )
            for y, m, currency, count, amount, g in await connection.execute(
                query.group_by(year, month, deals.c.won_currency, *groups)
            ):
                outcomes[key(y, m, g)]["won_sums"].append(
                    CurrencySum(currency, _int(count), _int(amount))
                )
            query, groups = _grouped_query(
                select(year, month, deals.c.furthest_stage, func.count()),
                group_by,
                conditions,
                where.owner,
            )
            for y, m, rank, count, g in await connection.execute(
                query.group_by(year, month, deals.c.furthest_stage, *groups)
            ):
                outcomes[key(y, m, g)]["reached"][FUNNEL[int(rank)]] += _int(count)
            query, groups = _grouped_query(
                select(year, month, deals.c.lost_reason, func.count()),
                group_by,
                [*conditions, deals.c.outcome == LOST],
                where.owner,
            )
            for y, m, reason, count, g in await connection.execute(
                query.group_by(year, month, deals.c.lost_reason, *groups)
            ):
                outcomes[key(y, m, g)]["reasons"][reason or "(none given)"] += _int(count)
            query, groups = _grouped_query(
                select(
                    year,
                    month,
                    stage_changes.c.from_stage,
                    func.sum(stage_changes.c.days_in_previous_stage),
                    func.count(),
                ).select_from(
                    deals.join(
                        stage_changes, stage_changes.c.opportunity_id == deals.c.opportunity_id
                    )
                ),
                group_by,
                conditions,
                where.owner,
            )
            for y, m, stage, days, count, g in await connection.execute(
                query.group_by(year, month, stage_changes.c.from_stage, *groups)
            ):
                entry = outcomes[key(y, m, g)]
                held = entry["days"].get(Stage(stage), (0.0, 0))
                entry["days"][Stage(stage)] = (held[0] + float(days or 0.0), held[1] + _int(count))
        return {
            k: ClosedDeals(
                won=v["won"],
                lost=v["lost"],
                won_sums=v["won_sums"],
                won_cycle_days=v["cycle"],
                reached=dict(v["reached"]),
                days_in_stage=v["days"],
                loss_reasons=dict(v["reasons"]),
            )
            for k, v in outcomes.items()
        }

    # --- one customer -------------------------------------------------------------------

    async def deals_of_customer(self, customer_id: str) -> list[DealRow]:
        """Every deal of the customer, newest first; the caller applies `can_view_deal`."""
        query = (
            select(deals)
            .where(deals.c.customer_id == customer_id, *_conditions(None, DealFilter()))
            .order_by(deals.c.created_at.desc(), deals.c.opportunity_id)
        )
        async with self._read() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [
            DealRow(
                opportunity_id=r["opportunity_id"],
                title=r["title"],
                customer_id=r["customer_id"],
                customer_name=r["customer_name"],
                stage=r["stage"],
                currency=r["currency"],
                amount_minor=r["amount_minor"],
                probability=r["probability"],
                expected_close_date=r["expected_close_date"],
                owners=list(r["owners"]),
                team_id=r["team_id"],
                created_by=r["created_by"],
                shares=shares_from_document(r["shares"]),
                created_at=r["created_at"],
                closed_at=r["closed_at"],
                outcome=r["outcome"],
                lost_reason=r["lost_reason"],
            )
            for r in rows
        ]

    # --- exchange rates -----------------------------------------------------------------

    async def exchange_rates(self) -> list[ExchangeRate]:
        query = select(exchange_rates).order_by(
            exchange_rates.c.from_currency,
            exchange_rates.c.to_currency,
            exchange_rates.c.effective_from,
        )
        async with self._read() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [
            ExchangeRate(r["from_currency"], r["to_currency"], r["effective_from"], r["rate"])
            for r in rows
        ]

    # --- snapshots ----------------------------------------------------------------------

    async def snapshots(self, limit: int) -> list[Snapshot]:
        async with self._read() as connection:
            taken = (
                await connection.execute(
                    select(forecast_snapshots.c.id, forecast_snapshots.c.taken_at)
                    .order_by(forecast_snapshots.c.taken_at.desc())
                    .limit(limit)
                )
            ).all()
            if not taken:
                return []
            lines: dict[uuid.UUID, list[SnapshotLine]] = defaultdict(list)
            rows = await connection.execute(
                select(forecast_snapshot_lines).where(
                    forecast_snapshot_lines.c.snapshot_id.in_([t.id for t in taken])
                )
            )
            for r in rows.mappings():
                lines[r["snapshot_id"]].append(
                    SnapshotLine(
                        r["month"],
                        r["dimension"],
                        r["group_key"],
                        CurrencySum(
                            r["currency"],
                            r["deals"],
                            r["amount_minor"],
                            r["weighted_centi_minor"],
                        ),
                    )
                )
        return [Snapshot(t.id, t.taken_at, lines[t.id]) for t in taken]


def _grouped_query(
    query: Select[Any],
    group_by: GroupBy,
    conditions: Iterable[ColumnElement[bool]],
    only_owner: str | None = None,
) -> tuple[Select[Any], list[Any]]:
    """`query` with its group column appended last, filtered by `conditions`."""
    joined, group = _grouped(query, group_by, only_owner)
    return joined.add_columns(group).where(*conditions), [group]


# --- writes outside the consumer ----------------------------------------------------------


async def save_exchange_rates(
    connection: AsyncConnection, rates: Sequence[ExchangeRate], by: str, now: datetime
) -> None:
    """Set each rate; a rate of the same pair and effective date is replaced."""
    insert_ = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    for rate in rates:
        statement = insert_(exchange_rates).values(
            from_currency=rate.from_currency,
            to_currency=rate.to_currency,
            effective_from=rate.effective_from,
            rate=rate.rate,
            set_by=by,
            set_at=now,
        )
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["from_currency", "to_currency", "effective_from"],
                set_={"rate": statement.excluded.rate, "set_by": by, "set_at": now},
            )
        )


async def take_snapshot(connection: AsyncConnection, slot: str, now: datetime) -> uuid.UUID | None:
    """Store the open pipeline by month of expected close, per owner, team and in all,
    in each deal's currency; None when this slot's snapshot was taken already."""
    insert_ = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    snapshot_id = uuid.uuid4()
    inserted = await connection.execute(
        insert_(forecast_snapshots)
        .values(id=snapshot_id, slot=slot, taken_at=now)
        .on_conflict_do_nothing(index_elements=["slot"])
        .returning(forecast_snapshots.c.id)
    )
    if inserted.first() is None:
        return None
    close = deals.c.expected_close_date
    year, month = extract("year", close), extract("month", close)
    lines = []
    for dimension, group_by in (
        ("all", GroupBy.NONE),
        ("team", GroupBy.TEAM),
        ("owner", GroupBy.OWNER),
    ):
        query, groups = _grouped_query(
            select(
                year,
                month,
                deals.c.currency,
                func.count(),
                func.sum(deals.c.amount_minor),
                func.sum(deals.c.amount_minor * deals.c.probability),
            ),
            group_by,
            [deals.c.stage.in_(_OPEN), close.is_not(None), *_conditions(None, DealFilter())],
        )
        for y, m, currency, count, amount, weighted, g in await connection.execute(
            query.group_by(year, month, deals.c.currency, *groups)
        ):
            lines.append(
                {
                    "snapshot_id": snapshot_id,
                    "month": f"{int(y):04d}-{int(m):02d}",
                    "dimension": dimension,
                    "group_key": g or "",
                    "currency": currency,
                    "deals": _int(count),
                    "amount_minor": _int(amount),
                    "weighted_centi_minor": _int(weighted),
                }
            )
    if lines:
        await connection.execute(forecast_snapshot_lines.insert(), lines)
    return snapshot_id


async def clear_read_model(connection: AsyncConnection, consumer_group: str) -> None:
    """Empty the tables built from events and forget which events were applied, in one
    transaction: a replay then applies every event again, and an event the live
    consumer applies meanwhile is either gone with the rows or kept with its inbox row."""
    if connection.dialect.name == "postgresql":
        # TRUNCATE waits for the live consumer's open transaction and blocks it until
        # this one commits, so no row of a half-applied event survives the clearing.
        await connection.execute(
            text(
                "TRUNCATE deal_owner_sums, deal_sums, stage_changes, deal_shares, deal_owners,"
                " deals"
            )
        )
    else:
        for table in (deal_owner_sums, deal_sums, stage_changes, deal_shares, deal_owners, deals):
            await connection.execute(delete(table))
    await connection.execute(delete(inbox).where(inbox.c.consumer_group == consumer_group))
