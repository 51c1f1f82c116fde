"""Opportunity persistence: rows to aggregates and back, and the read-side queries.

Writes lock the opportunity's row (`FOR UPDATE` on PostgreSQL; SQLite writers are
already serialised by `BEGIN IMMEDIATE`), so two requests on one deal apply one after
the other, and the version check makes a lost update impossible even so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    String,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.auth import Principal
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Address,
    Competitor,
    Contact,
    Customer,
    CustomFieldValue,
    DealContact,
    DecisionIssue,
    LeadOrigin,
    NextAction,
    NoteReason,
    Share,
    ShareGrant,
    Stage,
)
from dealflow_common.db import is_postgres
from dealflow_common.direct import DirectStatement
from dealflow_common.last_write import LastWrite
from dealflow_common.messaging.projection import AppliedSequences
from dealflow_common.one_write import ReadChanged, StaleCopy, is_one_write
from dealflow_common.recent import RecentCopies
from dealflow_common.versioned import VersionedTable
from dealflow_common.with_lines import InsertWithLines, entry_of
from dealflow_opportunity.adapters import search
from dealflow_opportunity.adapters.custom_fields import FINGERPRINT as DEFINITIONS_FINGERPRINT
from dealflow_opportunity.adapters.custom_fields import DefinitionsAsRead
from dealflow_opportunity.adapters.tables import (
    assignment_history,
    notes,
    opportunities,
    opportunity_owners,
    opportunity_shares,
    sales_history,
)
from dealflow_opportunity.domain.errors import OpportunityNotFound
from dealflow_opportunity.domain.model import (
    AssignmentEntry,
    Note,
    Opportunity,
    SalesHistoryEntry,
)
from dealflow_opportunity.domain.next_action import NextActionSource

# Statements are built once and executed with parameters: building them per call (with
# values inlined) cost more CPU than the database spent running them.
_SELECT = select(opportunities).where(opportunities.c.id == bindparam("b_id"))
# A new deal and its owners in one statement.
_INSERT_WITH_OWNERS = InsertWithLines(opportunities, opportunity_owners, "opportunity_id")


# On PostgreSQL a new deal, its owners, its first history entry and its search document
# go with its events in one statement (`add_at_commit`): opening a deal was BEGIN, five
# statements and COMMIT.
def _opened_with(deal_id: Any) -> list[Any]:
    return [
        entry_of(sales_history, "opportunity_id", deal_id)[0],
        search.new_deal_document(deal_id),
    ]


_OPENED = InsertWithLines(opportunities, opportunity_owners, "opportunity_id", also=_opened_with)
# A deal whose custom fields were checked against this process's copy of the
# definitions is inserted only while the table still has the copy's fingerprint.
_OPENED_ON_COPIED_DEFINITIONS = InsertWithLines(
    opportunities,
    opportunity_owners,
    "opportunity_id",
    also=_opened_with,
    gate=select(literal_column("1").label("unchanged")).where(
        bindparam("g_definitions", type_=String) == DEFINITIONS_FINGERPRINT
    ),
)
# Where the next action came from, and which sequence steps were applied, are
# bookkeeping, not a change of the deal: written without a new version, only under the
# row's lock (a consumer's batch, or a change run again locked), and never by the versioned
# save, which would write back what it read over what a consumer wrote since.
_BOOKKEEPING = ("next_action_source", "next_action_applied")
_VERSIONED = VersionedTable(opportunities, "opportunity", unversioned=_BOOKKEEPING)
_SAVE_BOOKKEEPING = (
    opportunities.update()
    .where(opportunities.c.id == bindparam("b_id"))
    .values(next_action_source=bindparam("b_source"), next_action_applied=bindparam("b_applied"))
)
_DELETE_OWNERS = delete(opportunity_owners).where(
    opportunity_owners.c.opportunity_id == bindparam("b_id")
)
_INSERT_OWNERS = DirectStatement(insert(opportunity_owners))
_DELETE_SHARES = delete(opportunity_shares).where(
    opportunity_shares.c.opportunity_id == bindparam("b_id")
)
_INSERT_SHARES = insert(opportunity_shares)
_SHARES_OF = (
    select(
        opportunity_shares.c.opportunity_id,
        opportunity_shares.c.holder_kind,
        opportunity_shares.c.holder_id,
        opportunity_shares.c.grant,
    )
    .where(opportunity_shares.c.opportunity_id.in_(bindparam("b_ids", expanding=True)))
    .order_by(opportunity_shares.c.opportunity_id, opportunity_shares.c.position)
)
_INSERT_HISTORY = DirectStatement(insert(sales_history))
_VERSIONED_WITH_HISTORY = _VERSIONED.with_entry(sales_history, "opportunity_id")
# A change made on a copy of what this process wrote last (`recent`) checks the next
# action's source too: automation may have changed it without a new version, and the
# answer shows it. (`next_action_applied` is not shown, and only consumers, which
# always read, decide on it.)
_ON_COPY = VersionedTable(
    opportunities, "opportunity", unversioned=_BOOKKEEPING, unchanged=("next_action_source",)
)
_ON_COPY_WITH_HISTORY = _ON_COPY.with_entry(sales_history, "opportunity_id")
_INSERT_NOTES = insert(notes)
_INSERT_ASSIGNMENTS = insert(assignment_history)
_OWNERS_OF = (
    select(opportunity_owners.c.opportunity_id, opportunity_owners.c.user_id)
    .where(opportunity_owners.c.opportunity_id.in_(bindparam("b_ids", expanding=True)))
    .order_by(opportunity_owners.c.opportunity_id, opportunity_owners.c.position)
)
# On PostgreSQL one deal is read in one statement, its owners and shares aggregated
# beside its row: a change loads its deal on every request, and the two extra reads
# were two of its round trips. SQLite reads them apart (`_owners_of`, `_shares_of`).
_WHOLE_DEALS = select(
    opportunities,
    select(
        func.array_agg(
            aggregate_order_by(opportunity_owners.c.user_id, opportunity_owners.c.position)
        )
    )
    .where(opportunity_owners.c.opportunity_id == opportunities.c.id)
    .scalar_subquery()
    .label("whole_owners"),
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_array(
                    opportunity_shares.c.holder_kind,
                    opportunity_shares.c.holder_id,
                    opportunity_shares.c.grant,
                ),
                opportunity_shares.c.position,
            ),
            type_=JSON,
        )
    )
    .where(opportunity_shares.c.opportunity_id == opportunities.c.id)
    .scalar_subquery()
    .label("whole_shares"),
)
_WHOLE = _WHOLE_DEALS.where(opportunities.c.id == bindparam("b_id"))
_WHOLE_FOR_UPDATE = DirectStatement(_WHOLE.with_for_update(of=opportunities))
_WHOLE_UNLOCKED = DirectStatement(_WHOLE)
# A consumer's batch locks every deal its events change at once, in the order of their
# ids (two batches locking the same deals cannot wait on each other in a cycle).
_MANY_FOR_UPDATE = DirectStatement(
    _WHOLE_DEALS.where(
        opportunities.c.id
        == any_(bindparam("b_ids", type_=postgresql.ARRAY(opportunities.c.id.type)))
    )
    .order_by(opportunities.c.id)
    .with_for_update(of=opportunities)
)


class OpportunityRepository:
    def __init__(
        self,
        connection: AsyncConnection,
        recent: RecentCopies[UUID, Opportunity] | None = None,
        served: Callable[[UUID], None] | None = None,
    ) -> None:
        self._connection = connection
        self._loaded_versions: dict[UUID, int] = {}
        self._loaded_text: dict[UUID, str] = {}
        self._ahead: dict[UUID, Opportunity] = {}
        self._search = search.SearchIndex(connection)
        self._recent = recent
        self._served = served
        self._copies: set[UUID] = set()
        self.written: dict[UUID, Opportunity] = {}
        """The deals this work wrote, as they are once it commits (`recent` keeps them)."""

    async def lock_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Load and lock, in one statement, the deals a consumer's batch will change:
        `get` then answers each from here, once (PostgreSQL; a no-op on SQLite, whose
        writers are serialised anyway). The rows stay locked until the commit, so what
        is kept here is what a `get` would read."""
        wanted = set(opportunity_ids).difference(self._ahead)
        if not wanted or not is_postgres(self._connection):
            return
        for row in await _MANY_FOR_UPDATE.all(self._connection, {"b_ids": list(wanted)}):
            self._ahead[row.id] = _from_whole(row)

    async def get(self, opportunity_id: UUID) -> Opportunity:
        """Load for a change: the row stays locked until the transaction ends (unlocked in
        one-write mode, where the versioned save refuses a change made in between)."""
        # Taken once: a second change of the deal in the batch reads what the first wrote.
        opportunity = self._ahead.pop(opportunity_id, None) or await _load(
            self._connection, opportunity_id, for_update=not is_one_write(self._connection)
        )
        if opportunity is None:
            raise OpportunityNotFound(opportunity_id)
        self._loaded_versions[opportunity.id] = opportunity.version
        self._loaded_text[opportunity.id] = search.deal_text(opportunity)
        return opportunity

    async def get_to_change(self, opportunity_id: UUID) -> Opportunity:
        """`get`, for a change that ends with its versioned write: in one-write mode a
        copy of what this process last committed of the deal (`recent`), if it kept one,
        instead of a read. The write refuses a copy out of date, and the unit of work
        runs the change again from a read (`StaleCopy`)."""
        if (
            self._recent is not None
            and self._served is not None
            and opportunity_id not in self._ahead
            and is_one_write(self._connection)
        ):
            opportunity = self._recent.take(opportunity_id)
            if opportunity is not None:
                self._served(opportunity_id)
                self._copies.add(opportunity_id)
                self._loaded_versions[opportunity_id] = opportunity.version
                self._loaded_text[opportunity_id] = search.deal_text(opportunity)
                return opportunity
        return await self.get(opportunity_id)

    async def add(self, opportunity: Opportunity) -> None:
        owners = [{"user_id": user, "position": i} for i, user in enumerate(opportunity.owners)]
        await _INSERT_WITH_OWNERS.add(self._connection, _to_row(opportunity), owners)
        opportunity.owners_changed = False
        await self._write_entries(opportunity, new=True)
        await self._search.add(opportunity)
        self.written[opportunity.id] = opportunity

    async def add_at_commit(
        self, opportunity: Opportunity, definitions: DefinitionsAsRead | None = None
    ) -> LastWrite | None:
        """A new deal: on PostgreSQL its row, owners, first history entry and search
        document, for the commit to send with the outbox rows (`UnitOfWork.commit`); on
        SQLite they are written here (None). `definitions`: what its custom fields were
        checked against; from a copy (with a fingerprint), the insert checks that they
        are still the table's, and `StaleCopy` is raised when they are not."""
        copy = definitions if definitions is not None and definitions.fingerprint else None
        alone = (
            not is_postgres(self._connection)
            or len(opportunity.new_history) != 1  # a new deal entered `lead`, once
            or opportunity.shares
            or opportunity.new_notes
            or opportunity.new_assignments
        )
        if alone:
            if copy is not None:
                # Written in steps, the deal has no insert to carry the gate: it runs
                # again from a read of the definitions (no API opens such a deal now).
                copy.forget()
                raise StaleCopy("a deal written in steps is checked against a read")
            await self.add(opportunity)
            return None
        (entry,) = opportunity.new_history
        owners = [{"user_id": user, "position": i} for i, user in enumerate(opportunity.owners)]
        history = _history_row(entry)
        also = {param: history[name] for param, name in _HISTORY_PARAMS}
        also["s_text"] = search.deal_text(opportunity)
        if copy is None:
            last = _OPENED.last_add(_to_row(opportunity), owners, also)
        else:
            forget = copy.forget

            async def definitions_changed(_connection: AsyncConnection) -> None:
                forget()
                raise StaleCopy("the custom field definitions changed since they were copied")

            also["g_definitions"] = copy.fingerprint
            last = _OPENED_ON_COPIED_DEFINITIONS.last_add(
                _to_row(opportunity), owners, also, definitions_changed
            )
        opportunity.owners_changed = False
        opportunity.new_history.clear()
        self._loaded_versions[opportunity.id] = opportunity.version
        self.written[opportunity.id] = opportunity
        return last

    async def save(self, opportunity: Opportunity) -> None:
        last = await self.save_at_commit(opportunity)
        if last is not None:
            await last.alone(self._connection)

    async def save_at_commit(self, opportunity: Opportunity) -> LastWrite | None:
        """Write what the change added, but the deal's own row: its versioned save is
        returned, for the commit to send with the outbox rows (`UnitOfWork.commit`).
        None when the row itself did not change."""
        loaded = self._loaded_versions[opportunity.id]
        if opportunity.bookkeeping_changed:
            if is_one_write(self._connection):
                # Read unlocked: a consumer may have written the bookkeeping since. Run
                # again locked, where what is read is what the write replaces.
                raise ReadChanged(f"the next action's bookkeeping of {opportunity.id}")
            row = _to_row(opportunity)
            await self._connection.execute(
                _SAVE_BOOKKEEPING,
                {
                    "b_id": opportunity.id,
                    "b_source": row["next_action_source"],
                    "b_applied": row["next_action_applied"],
                },
            )
            opportunity.bookkeeping_changed = False
        if opportunity.version == loaded:
            if opportunity.id in self._copies and self._recent is not None:
                # No versioned write will check the copy the answer is made of: the run
                # again reads (the copy is forgotten; it may not be out of date).
                self._recent.forget(opportunity.id)
                raise StaleCopy(f"nothing written checks the copy of {opportunity.id}")
            self.written[opportunity.id] = opportunity
            return None
        self.written[opportunity.id] = opportunity
        changes = _to_row(opportunity)
        del changes["id"]
        if len(opportunity.new_history) == 1:
            # A stage move: the deal and its history entry in one statement.
            (entry,) = opportunity.new_history
            with_history = (
                _ON_COPY_WITH_HISTORY if opportunity.id in self._copies else _VERSIONED_WITH_HISTORY
            )
            last = with_history.last_save(opportunity.id, loaded, changes, _history_row(entry))
            opportunity.new_history.clear()
        else:
            versioned = _ON_COPY if opportunity.id in self._copies else _VERSIONED
            last = versioned.last_save(opportunity.id, loaded, changes)
        self._loaded_versions[opportunity.id] = opportunity.version
        # The search document is rewritten only when what it is made of changed: most
        # changes (a stage move, an owner) leave it as it is and cost no statement.
        text = search.deal_text(opportunity)
        searchable_changed = bool(opportunity.new_notes) or text != self._loaded_text.get(
            opportunity.id
        )
        await self._write_entries(opportunity)
        if searchable_changed:
            await self._search.refresh(opportunity)
            self._loaded_text[opportunity.id] = text
        return last

    async def _write_entries(self, opportunity: Opportunity, *, new: bool = False) -> None:
        """Write what the change added; `new`: the deal has no rows yet to replace."""
        connection = self._connection
        if opportunity.owners_changed:
            if not new:
                await connection.execute(_DELETE_OWNERS, {"b_id": opportunity.id})
            if opportunity.owners:
                await _INSERT_OWNERS.each(
                    connection,
                    [
                        {"opportunity_id": opportunity.id, "user_id": user, "position": i}
                        for i, user in enumerate(opportunity.owners)
                    ],
                )
            opportunity.owners_changed = False
        if opportunity.shares_changed:
            if not new:
                await connection.execute(_DELETE_SHARES, {"b_id": opportunity.id})
            if opportunity.shares:
                await connection.execute(
                    _INSERT_SHARES,
                    [
                        {
                            "opportunity_id": opportunity.id,
                            "holder_kind": share.kind,
                            "holder_id": share.id,
                            "grant": share.grant.value,
                            "position": i,
                        }
                        for i, share in enumerate(opportunity.shares)
                    ],
                )
            opportunity.shares_changed = False
        if opportunity.new_history:
            await _INSERT_HISTORY.each(
                connection,
                [
                    {"opportunity_id": opportunity.id, **_history_row(e)}
                    for e in opportunity.new_history
                ],
            )
            opportunity.new_history.clear()
        if opportunity.new_notes:
            await connection.execute(
                _INSERT_NOTES,
                [
                    {
                        "id": n.id,
                        "opportunity_id": opportunity.id,
                        "reason": n.reason.value,
                        "text": n.text,
                        "added_by": n.added_by,
                        "added_at": n.added_at,
                    }
                    for n in opportunity.new_notes
                ],
            )
            opportunity.new_notes.clear()
        if opportunity.new_assignments:
            await connection.execute(
                _INSERT_ASSIGNMENTS,
                [
                    {
                        "opportunity_id": opportunity.id,
                        "action": a.action,
                        "user_id": a.user_id,
                        "team_id": a.team_id,
                        "owners": list(a.owners),
                        "assigned_by": a.assigned_by,
                        "assigned_at": a.assigned_at,
                    }
                    for a in opportunity.new_assignments
                ],
            )
            opportunity.new_assignments.clear()


@dataclass(frozen=True, slots=True)
class OpportunityFilter:
    stages: Sequence[Stage] = ()
    owner: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    text: str | None = None
    close_from: date | None = None
    close_to: date | None = None
    custom_fields: Sequence[tuple[str, str]] = ()
    """(key, value) pairs, the value spelled as kept (`domain.custom_fields.filter_value`)."""


class OpportunityQueries:
    """Reads for the API; they never lock and never change anything."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def find(self, opportunity_id: UUID) -> Opportunity | None:
        return await _load(self._connection, opportunity_id, for_update=False)

    async def page(
        self,
        viewer: Principal,
        where: OpportunityFilter,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Opportunity]:
        """Newest first, `limit` rows after the cursor position, visible to `viewer`."""
        o = opportunities
        conditions: list[Any] = []
        if not viewer.sees_everything:
            visible = [
                o.c.created_by == viewer.user_id,
                o.c.id.in_(
                    select(opportunity_owners.c.opportunity_id).where(
                        opportunity_owners.c.user_id == viewer.user_id
                    )
                ),
            ]
            shared = opportunity_shares.c.holder_kind == "user"
            shared = and_(shared, opportunity_shares.c.holder_id == viewer.user_id)
            if viewer.teams:
                teams = sorted(viewer.teams)
                visible.append(o.c.team_id.in_(teams))
                shared = or_(
                    shared,
                    and_(
                        opportunity_shares.c.holder_kind == "team",
                        opportunity_shares.c.holder_id.in_(teams),
                    ),
                )
            # The same rule as deal_access.can_view_deal, in SQL, so that a page holds
            # `limit` visible deals and its cursor points only at a visible one.
            visible.append(o.c.id.in_(select(opportunity_shares.c.opportunity_id).where(shared)))
            conditions.append(or_(*visible))
        if where.stages:
            conditions.append(o.c.stage.in_([s.value for s in where.stages]))
        if where.owner:
            conditions.append(
                o.c.id.in_(
                    select(opportunity_owners.c.opportunity_id).where(
                        opportunity_owners.c.user_id == where.owner
                    )
                )
            )
        if where.team_id:
            conditions.append(o.c.team_id == where.team_id)
        if where.customer_id:
            conditions.append(o.c.customer_id == where.customer_id)
        if where.text:
            terms = search.terms_of(where.text)
            conditions.append(o.c.id.in_(search.matching(terms, is_postgres(self._connection))))
        if where.close_from:
            conditions.append(o.c.expected_close_date >= where.close_from)
        if where.close_to:
            conditions.append(o.c.expected_close_date <= where.close_to)
        for key, value in where.custom_fields:
            conditions.append(o.c.custom_fields[key].as_string() == value)
        if after is not None:
            conditions.append(tuple_(o.c.created_at, o.c.id) < tuple_(*after))
        query = (
            select(o)
            .where(and_(*conditions))
            .order_by(o.c.created_at.desc(), o.c.id.desc())
            .limit(limit)
        )
        rows = (await self._connection.execute(query)).all()
        ids = [r.id for r in rows]
        owners = await _owners_of(self._connection, ids)
        shares = await _shares_of(self._connection, ids)
        return [_to_opportunity(r, owners.get(r.id, []), shares.get(r.id, [])) for r in rows]

    async def history(self, opportunity_id: UUID) -> list[SalesHistoryEntry]:
        rows = await self._connection.execute(
            select(sales_history)
            .where(sales_history.c.opportunity_id == opportunity_id)
            .order_by(sales_history.c.id)
        )
        return [
            SalesHistoryEntry(
                from_stage=Stage(r.from_stage) if r.from_stage else None,
                to_stage=Stage(r.to_stage),
                changed_at=r.changed_at,
                changed_by=r.changed_by,
                days_in_previous_stage=r.days_in_previous_stage,
                owners=tuple(r.owners),
                probability=r.probability,
            )
            for r in rows
        ]

    async def notes(self, opportunity_id: UUID) -> list[Note]:
        rows = await self._connection.execute(
            select(notes)
            .where(notes.c.opportunity_id == opportunity_id)
            .order_by(notes.c.added_at, notes.c.id)
        )
        return [Note(r.id, NoteReason(r.reason), r.text, r.added_by, r.added_at) for r in rows]

    async def assignments(self, opportunity_id: UUID) -> list[AssignmentEntry]:
        rows = await self._connection.execute(
            select(assignment_history)
            .where(assignment_history.c.opportunity_id == opportunity_id)
            .order_by(assignment_history.c.id)
        )
        return [
            AssignmentEntry(
                r.action, r.user_id, r.team_id, tuple(r.owners), r.assigned_by, r.assigned_at
            )
            for r in rows
        ]


async def _load(
    connection: AsyncConnection, opportunity_id: UUID, *, for_update: bool
) -> Opportunity | None:
    """One deal with its owners and shares; `for_update` locks its row (PostgreSQL)."""
    if is_postgres(connection):
        query = _WHOLE_FOR_UPDATE if for_update else _WHOLE_UNLOCKED
        row = await query.first(connection, {"b_id": opportunity_id})
        return None if row is None else _from_whole(row)
    row = (await connection.execute(_SELECT, {"b_id": opportunity_id})).first()
    if row is None:
        return None
    owners = await _owners_of(connection, [opportunity_id])
    shares_of = await _shares_of(connection, [opportunity_id])
    return _to_opportunity(row, owners.get(opportunity_id, []), shares_of.get(opportunity_id, []))


def _from_whole(row: Row[Any]) -> Opportunity:
    """A deal read by `_WHOLE`: its row with its owners and shares beside it."""
    shares = [
        Share(kind=kind, id=holder, grant=ShareGrant(grant))
        for kind, holder, grant in row.whole_shares or ()
    ]
    return _to_opportunity(row, list(row.whole_owners or ()), shares)


async def _owners_of(connection: AsyncConnection, ids: Sequence[UUID]) -> dict[UUID, list[str]]:
    if not ids:
        return {}
    rows = await connection.execute(_OWNERS_OF, {"b_ids": list(ids)})
    owners: dict[UUID, list[str]] = {}
    for opportunity_id, user_id in rows:
        owners.setdefault(opportunity_id, []).append(user_id)
    return owners


async def _shares_of(connection: AsyncConnection, ids: Sequence[UUID]) -> dict[UUID, list[Share]]:
    if not ids:
        return {}
    rows = await connection.execute(_SHARES_OF, {"b_ids": list(ids)})
    shares: dict[UUID, list[Share]] = {}
    for opportunity_id, kind, holder, grant in rows:
        shares.setdefault(opportunity_id, []).append(
            Share(kind=kind, id=holder, grant=ShareGrant(grant))
        )
    return shares


_HISTORY_PARAMS = tuple(
    (f"e_{c.name}", c.name) for c in sales_history.c if c.name not in ("id", "opportunity_id")
)
"""The parameter of each column of a deal's first history entry when it is opened."""


def _history_row(e: SalesHistoryEntry) -> dict[str, Any]:
    """A sales history entry's columns, but the deal it belongs to."""
    return {
        "from_stage": e.from_stage.value if e.from_stage else None,
        "to_stage": e.to_stage.value,
        "changed_at": e.changed_at,
        "changed_by": e.changed_by,
        "days_in_previous_stage": e.days_in_previous_stage,
        "owners": list(e.owners),
        "probability": e.probability,
    }


def _to_row(o: Opportunity) -> dict[str, Any]:
    return {
        "id": o.id,
        "title": o.title,
        "description": o.description,
        "customer_kind": o.customer.kind,
        "customer_id": o.customer.id,
        "customer_name": o.customer.name,
        "contact": o.contact.model_dump(mode="json") if o.contact else None,
        "contact_address": o.contact_address.model_dump(mode="json") if o.contact_address else None,
        "value_amount": o.value.amount,
        "value_currency": o.value.currency,
        "stage": o.stage.value,
        "probability": o.probability,
        "expected_close_date": o.expected_close_date,
        "next_action_date": o.next_action.date if o.next_action else None,
        "next_action_note": o.next_action.note if o.next_action else None,
        "next_action_source": o.next_action_source.value if o.next_action_source else None,
        "next_action_applied": o.steps_applied.to_document() if o.steps_applied.source else None,
        "lead_origin": o.lead_origin.value if o.lead_origin else None,
        "external_reference": o.external_reference,
        "team_id": o.team_id,
        "won_quote_id": o.won_quote_id,
        "order_id": o.order_id,
        "lost_reason": o.lost_reason,
        "created_by": o.created_by,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
        "stage_entered_at": o.stage_entered_at,
        "closed_at": o.closed_at,
        "version": o.version,
        "custom_fields": (
            {
                key: value.model_dump(mode="json") if isinstance(value, Money) else value
                for key, value in o.custom_fields.items()
            }
            if o.custom_fields
            else None
        ),
        "competitors": _documents(o.competitors),
        "decision_issues": _documents(o.decision_issues),
        "contacts": _documents(o.contacts),
    }


def _documents(records: Sequence[Competitor | DecisionIssue | DealContact]) -> Any:
    return [r.model_dump(mode="json") for r in records] if records else None


def _to_opportunity(row: Row[Any], owners: list[str], shares: list[Share]) -> Opportunity:
    return Opportunity(
        id=row.id,
        title=row.title,
        description=row.description,
        customer=Customer(kind=row.customer_kind, id=row.customer_id, name=row.customer_name),
        contact=Contact.model_validate(row.contact) if row.contact else None,
        contact_address=(
            Address.model_validate(row.contact_address) if row.contact_address else None
        ),
        value=Money.exact(row.value_amount, row.value_currency),
        stage=Stage(row.stage),
        probability=row.probability,
        expected_close_date=row.expected_close_date,
        next_action=(
            NextAction(date=row.next_action_date, note=row.next_action_note)
            if row.next_action_date
            else None
        ),
        lead_origin=LeadOrigin(row.lead_origin) if row.lead_origin else None,
        external_reference=row.external_reference,
        owners=owners,
        team_id=row.team_id,
        won_quote_id=row.won_quote_id,
        order_id=row.order_id,
        lost_reason=row.lost_reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        stage_entered_at=row.stage_entered_at,
        closed_at=row.closed_at,
        version=row.version,
        next_action_source=(
            NextActionSource(row.next_action_source) if row.next_action_source else None
        ),
        steps_applied=AppliedSequences.from_document(row.next_action_applied),
        shares=shares,
        custom_fields=_custom_fields(row.custom_fields),
        competitors=[Competitor.model_validate(r) for r in row.competitors or ()],
        decision_issues=[DecisionIssue.model_validate(r) for r in row.decision_issues or ()],
        contacts=[DealContact.model_validate(r) for r in row.contacts or ()],
    )


def _custom_fields(document: dict[str, Any] | None) -> dict[str, CustomFieldValue]:
    # Money is the one value kept as an object; every other type is a string.
    return {
        key: Money.model_validate(value) if isinstance(value, dict) else value
        for key, value in (document or {}).items()
    }
