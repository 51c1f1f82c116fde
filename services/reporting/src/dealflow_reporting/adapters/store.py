"""The read model's rows: a deal as `ReportedDeal` in and out, and its stage changes.

Writes happen only in the consumer's transaction (and the rebuild's), so the row a
handler reads is locked until the event is applied.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.opportunity import LeadOrigin, Stage
from dealflow_common.deal_access import shares_from_document, shares_to_document
from dealflow_common.direct import DirectStatement
from dealflow_common.messaging.projection import AppliedSequences, ProjectionRows
from dealflow_reporting.adapters.tables import (
    deal_owner_sums,
    deal_owners,
    deal_shares,
    deal_sums,
    deals,
    stage_changes,
)
from dealflow_reporting.domain.deal import Contribution, ReportedDeal, SumKey


class DealStore:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._dialect = connection.dialect.name
        # Sums moved by this transaction's events, per table (per owner or not).
        self._sum_changes: dict[bool, dict[SumKey, list[int]]] = {False: {}, True: {}}
        self._held: dict[object, ReportedDeal | None] = {}
        """A batch's deals, locked ahead: each as this transaction sees it (None: no row)."""
        self._unwritten: dict[object, dict[str, Any]] = {}
        """The rows of held deals saved since, written back by `write_held`."""
        self._unadded: dict[object, dict[str, Any]] = {}
        """Held deals this transaction added, inserted by `write_held` (as they end up)."""
        self._unadded_owners: dict[object, list[dict[str, Any]]] = {}
        self._unadded_shares: dict[object, list[dict[str, Any]]] = {}
        """The owner and share rows of those deals, inserted with them."""
        self._stage_changes: list[dict[str, Any]] = []
        """Stage changes learnt, inserted by `write_held` in one round trip."""

    async def lock_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock these deals' rows in one statement and hold them until `write_held`
        (as `HeldRows` does for a projection's rows; here the deal itself is held)."""
        wanted = set(opportunity_ids).difference(self._held)
        for key, row in (await _DEALS.lock_many(self._connection, wanted)).items():
            self._held[key] = None if row is None else _deal(row._mapping)

    async def get_for_update(self, opportunity_id: UUID) -> ReportedDeal | None:
        if opportunity_id in self._held:
            return self._held[opportunity_id]
        row = await _DEALS.get(self._connection, opportunity_id, lock=True)
        return None if row is None else _deal(row._mapping)

    async def save(
        self, deal: ReportedDeal, *, new: bool, owners_changed: bool, shares_changed: bool = False
    ) -> None:
        values = _row(deal)
        held = deal.id in self._held
        if held:
            self._held[deal.id] = deal
        if (new and held) or deal.id in self._unadded:
            # A deal the batch adds: no row, and none to lock when the batch began. Its
            # rows are inserted as they end up, with the batch's other new deals, by
            # `write_held` (a deal's first events usually come in one batch).
            self._unadded[deal.id] = values
            if new or owners_changed:
                self._unadded_owners[deal.id] = _owner_rows(deal)
            if new or shares_changed:
                self._unadded_shares[deal.id] = _share_rows(deal)
            return
        if new:
            await _INSERT_DEAL.rowcount(self._connection, values)
        elif held:
            self._unwritten[deal.id] = {**values, "b_id": deal.id}
        else:
            await _UPDATE_DEAL.rowcount(self._connection, {**values, "b_id": deal.id})
        if owners_changed:
            if not new:  # a new deal has no owner rows to replace
                await self._connection.execute(
                    delete(deal_owners).where(deal_owners.c.opportunity_id == deal.id)
                )
            if owner_rows := _owner_rows(deal):
                await self._connection.execute(insert(deal_owners), owner_rows)
        if shares_changed:
            if not new:
                await self._connection.execute(
                    delete(deal_shares).where(deal_shares.c.opportunity_id == deal.id)
                )
            if share_rows := _share_rows(deal):
                await self._connection.execute(insert(deal_shares), share_rows)

    async def adjust_sums(
        self, before: list[Contribution], after: list[Contribution], *, per_owner: bool = False
    ) -> None:
        """Move the kept sums (`deal_sums`, or `deal_owner_sums` when `per_owner`) by
        what the deal adds now less what it added before. The change is held until
        `write_held`, which the unit of work calls before it commits."""
        change = self._sum_changes[per_owner]
        for sign, found in ((-1, before), (1, after)):
            for part in found:
                delta = change.setdefault(part.key, [0, 0, 0])
                delta[0] += sign
                delta[1] += sign * part.amount_minor
                delta[2] += sign * part.weighted_centi_minor

    async def write_held(self) -> None:
        """Write what this transaction's events changed and held back, before it
        commits: the deals it added, the held deals' rows and the stage changes, each in
        one round trip, then the sums.

        A deal added had no row when the batch locked its deals, and a missing row
        cannot be locked: if another transaction (a replica, during a rebalance) added
        it since, the insert fails on the key and the batch rolls back, and the consumer
        applies its events one by one, each finding that row and locking it."""
        if self._unadded:
            order = sorted(self._unadded, key=str)  # one order for every replica's inserts
            await _INSERT_DEAL.each(self._connection, [self._unadded[key] for key in order])
            owners = [row for key in order for row in self._unadded_owners.get(key, ())]
            shares = [row for key in order for row in self._unadded_shares.get(key, ())]
            self._unadded.clear()
            self._unadded_owners.clear()
            self._unadded_shares.clear()
            if owners:
                await self._connection.execute(insert(deal_owners), owners)
            if shares:
                await self._connection.execute(insert(deal_shares), shares)
        if self._unwritten:
            rows = list(self._unwritten.values())
            self._unwritten.clear()
            await _UPDATE_DEAL.each(self._connection, rows)
        if self._stage_changes:
            changes = self._stage_changes
            self._stage_changes = []
            await _stage_change_insert(self._dialect).each(self._connection, changes)
        await self.write_sums()

    async def write_sums(self) -> None:
        """Write the sums the transaction's events moved: one upsert per table for the
        whole batch of events, in key order, so that two consumers (replicas of this
        service on different partitions) lock the sums they share in one order and
        cannot deadlock, as they did when each event wrote its own."""
        for per_owner, change in self._sum_changes.items():
            keys = _OWNER_SUM_KEYS if per_owner else _SUM_KEYS
            rows = [
                {
                    **dict(zip(keys, vars_of(key, keys), strict=True)),
                    "deals": count,
                    "amount_minor": amount,
                    "weighted_centi_minor": weighted,
                }
                for key, (count, amount, weighted) in sorted(
                    change.items(), key=lambda item: tuple(str(v) for v in vars_of(item[0], keys))
                )
                if count or amount or weighted
            ]
            change.clear()
            if rows:
                # The keys are distinct, as a multi-row upsert requires.
                await self._connection.execute(_sums_upsert(self._dialect, per_owner), rows)

    async def add_stage_change(
        self,
        opportunity_id: UUID,
        sequence: int,
        from_stage: Stage,
        to_stage: Stage,
        changed_at: datetime,
        days_in_previous_stage: float,
    ) -> None:
        """Keep a stage change; `write_held` inserts it (nothing in a batch reads them)."""
        self._stage_changes.append(
            {
                "opportunity_id": opportunity_id,
                "sequence": sequence,
                "from_stage": from_stage.value,
                "to_stage": to_stage.value,
                "changed_at": changed_at,
                "days_in_previous_stage": days_in_previous_stage,
            }
        )


_SUM_KEYS = ("kind", "stage", "team_key", "lead_origin_key", "currency", "year", "month")
_OWNER_SUM_KEYS = ("kind", "stage", "owner_key", *_SUM_KEYS[2:])

# Statements are built once and executed with parameters: built per event (with the
# values inlined) they were compiled again each time, a fifth of the service's CPU.
# A deal's row read and locked as every projection's is (locked alone, or a batch's at once).
_DEALS = ProjectionRows(deals, key="opportunity_id")
_INSERT_DEAL = DirectStatement(insert(deals))
_UPDATE_DEAL = DirectStatement(update(deals).where(deals.c.opportunity_id == bindparam("b_id")))


@functools.cache
def _sums_upsert(dialect: str, per_owner: bool) -> Any:
    table = deal_owner_sums if per_owner else deal_sums
    keys = _OWNER_SUM_KEYS if per_owner else _SUM_KEYS
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={
            "deals": table.c.deals + statement.excluded.deals,
            "amount_minor": table.c.amount_minor + statement.excluded.amount_minor,
            "weighted_centi_minor": table.c.weighted_centi_minor
            + statement.excluded.weighted_centi_minor,
        },
    )


@functools.cache
def _stage_change_insert(dialect: str) -> DirectStatement:
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return DirectStatement(insert_(stage_changes).on_conflict_do_nothing())


def vars_of(key: SumKey, keys: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(getattr(key, name) for name in keys)


def _row(deal: ReportedDeal) -> dict[str, Any]:
    closed_on: date | None = deal.closed_on
    return {
        "opportunity_id": deal.id,
        "title": deal.title,
        "customer_id": deal.customer_id,
        "customer_name": deal.customer_name,
        "lead_origin": deal.lead_origin.value if deal.lead_origin else None,
        "currency": deal.currency,
        "amount_minor": deal.amount_minor,
        "stage": deal.stage.value,
        "probability": deal.probability,
        "expected_close_date": deal.expected_close_date,
        "team_id": deal.team_id,
        "created_by": deal.created_by,
        "owners": list(deal.owners),
        "shares": shares_to_document(deal.shares) if deal.shares else None,
        "created_at": deal.created_at,
        "closed_at": deal.closed_at,
        "closed_on": closed_on,
        "outcome": deal.outcome,
        "won_currency": deal.won_currency,
        "won_amount_minor": deal.won_amount_minor,
        "lost_reason": deal.lost_reason,
        "cycle_days": deal.cycle_days,
        "furthest_stage": deal.furthest_stage,
        "purged_at": deal.purged_at,
        "applied": deal.sequences.to_document(),
    }


def _owner_rows(deal: ReportedDeal) -> list[dict[str, Any]]:
    return [{"opportunity_id": deal.id, "owner": owner} for owner in sorted(set(deal.owners))]


def _share_rows(deal: ReportedDeal) -> list[dict[str, Any]]:
    # One row per holder (the last grant named wins: a list of shares names each holder
    # once; a duplicate must not fail the event).
    holders = {(share.kind, share.id): share.grant.value for share in deal.shares}
    return [
        {"opportunity_id": deal.id, "kind": kind, "holder_id": holder, "grant": grant}
        for (kind, holder), grant in sorted(holders.items())
    ]


def _deal(row: Any) -> ReportedDeal:
    return ReportedDeal(
        id=row["opportunity_id"],
        title=row["title"],
        customer_id=row["customer_id"],
        customer_name=row["customer_name"],
        lead_origin=LeadOrigin(row["lead_origin"]) if row["lead_origin"] else None,
        currency=row["currency"],
        amount_minor=row["amount_minor"],
        stage=Stage(row["stage"]),
        probability=row["probability"],
        expected_close_date=row["expected_close_date"],
        owners=list(row["owners"]),
        team_id=row["team_id"],
        created_by=row["created_by"],
        shares=shares_from_document(row["shares"]),
        created_at=row["created_at"],
        closed_at=row["closed_at"],
        outcome=row["outcome"],
        won_currency=row["won_currency"],
        won_amount_minor=row["won_amount_minor"],
        lost_reason=row["lost_reason"],
        purged_at=row["purged_at"],
        furthest_stage=row["furthest_stage"],
        sequences=AppliedSequences.from_document(row["applied"]),
    )
