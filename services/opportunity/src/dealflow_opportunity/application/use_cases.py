"""The opportunity's use cases, one transaction each.

Every change loads the deal with its row locked, checks who may do it and the
`If-Match` version, lets the aggregate apply the rule, and commits the new state with
the events it recorded (through the outbox). A refusal raises before anything is
written, so bad input never leaves a partial write.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import NoteReason, Share, Stage
from dealflow_common.errors import NotPermitted
from dealflow_common.idempotency import Idempotency
from dealflow_common.one_write import once_then_locked
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain import access, custom_fields
from dealflow_opportunity.domain.errors import OpportunityNotFound
from dealflow_opportunity.domain.model import (
    DealRecord,
    Note,
    Opportunity,
    OpportunityChanges,
    RecordKind,
)

Authorize = Callable[[Opportunity, Principal], None]


@dataclass(frozen=True, slots=True)
class Opened:
    opportunity: Opportunity
    replayed: bool
    """True when an earlier request with the same Idempotency-Key had opened it."""


async def open_opportunity(
    uow: OpportunityUnitOfWork,
    principal: Principal,
    idempotency: Idempotency | None = None,
    **fields: Any,
) -> Opened:
    if not principal.has_any(*access.WRITERS):
        raise NotPermitted("operators may read deals but not open them")
    if "team_id" not in fields and len(principal.teams) == 1:
        # A rep of one team works for that team: its managers see and steer the deal.
        # A request that names a team, or `"team_id": null`, says otherwise.
        (fields["team_id"],) = principal.teams
    team_id = fields.get("team_id")
    if (
        team_id is not None
        and team_id not in principal.teams
        and not principal.has_any(Role.MANAGER, Role.ADMIN)
    ):
        raise NotPermitted(f"you can file deals only in your own teams, not {team_id}")
    owners = fields.get("owners")
    if (
        owners is not None
        and owners not in ([], [principal.user_id])
        and not principal.has_any(Role.MANAGER, Role.ADMIN)
    ):
        raise NotPermitted("only a manager or an admin opens a deal for other people")
    asked_fields = fields.get("custom_fields") or {}

    async def once(unlocked: bool) -> Opened:
        # One-write: the custom fields are checked against this process's copy of the
        # definitions (or a read without a transaction, as they were read without a
        # lock), and the new deal goes with its events in one statement, which checks
        # that a copy is still what the table holds (`adapters.custom_fields`).
        async with uow.one_write(unlocked):
            if idempotency is not None:
                # A retry is answered with the deal the first request opened (a key
                # costs a transaction: `claim` below). Its creator always sees it.
                earlier = await uow.request_keys.earlier(principal.user_id, idempotency)
                if earlier is not None:
                    return Opened(await uow.opportunities.get(earlier), replayed=True)
            definitions = await uow.custom_fields.for_new_deal()
            values = custom_fields.values_for_new_deal(definitions.definitions, asked_fields)
            now = uow.clock()
            opportunity = Opportunity.open(
                by=principal.user_id, now=now, **{**fields, "custom_fields": values}
            )
            if idempotency is not None:
                await uow.request_keys.claim(principal.user_id, idempotency, opportunity.id, now)
            last = await uow.opportunities.add_at_commit(opportunity, definitions)
            uow.collect(opportunity)
            await uow.commit(last)
        return Opened(opportunity, replayed=False)

    # Run again (locked) only when another request with the same key was stored
    # meanwhile: the second run answers with its deal.
    return await once_then_locked(once, None)


async def _change(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    apply: Callable[[Opportunity, datetime], object],
    authorize: Authorize = access.require_change,
) -> Opportunity:

    async def once(unlocked: bool) -> Opportunity:
        # Unlocked, a change that only moves the deal's row writes once (`one_write`).
        async with uow.one_write(unlocked):
            opportunity = await uow.opportunities.get_to_change(opportunity_id)
            if not access.can_view(opportunity, principal):
                # Someone who may not see a deal learns nothing about it, not even that it
                # exists.
                raise OpportunityNotFound(opportunity_id).unseen()
            authorize(opportunity, principal)
            opportunity.check_version(expected_version)
            applied = apply(opportunity, uow.clock())
            if inspect.isawaitable(applied):
                await applied
            # The deal's row goes with its events, in one statement (`last_write`).
            last = await uow.opportunities.save_at_commit(opportunity)
            uow.collect(opportunity)
            await uow.commit(last)
        return opportunity

    return await once_then_locked(once, expected_version)


async def update_opportunity(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    changes: OpportunityChanges,
    custom_field_values: Mapping[str, object] | None = None,
) -> Opportunity:
    """Apply `changes`; `custom_field_values` sets the keys it gives (None clears one)."""

    async def apply(o: Opportunity, now: datetime) -> None:
        nonlocal changes
        if custom_field_values:
            merged = custom_fields.values_after_update(
                await uow.custom_fields.all(), o.custom_fields, custom_field_values
            )
            changes = dataclasses.replace(changes, custom_fields=merged)
        # A next action cleared by hand gives way to the deal's earliest open task.
        clears = "next_action" in changes.given() and changes.next_action is None
        earliest = await uow.tasks.earliest_open(o.id) if clears else None
        o.update(changes, principal.user_id, now, earliest)

    return await _change(uow, opportunity_id, principal, expected_version, apply)


async def move_stage(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    target: Stage,
    probability: int | None,
    lost_reason: str | None,
    note: str | None,
) -> Opportunity:
    def apply(o: Opportunity, now: datetime) -> None:
        o.move_to(target, principal.user_id, now, probability=probability, lost_reason=lost_reason)
        if note:
            o.add_note(NoteReason.STAGE_CHANGE, note, principal.user_id, now)

    return await _change(uow, opportunity_id, principal, expected_version, apply)


async def lose_opportunity(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    reason: str,
    note: str | None,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.lose(reason, principal.user_id, now, note),
    )


async def assign_owner(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    user_id: str,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.assign(user_id, principal.user_id, now),
        lambda o, p: access.require_assignment(o, p, user_id),
    )


async def unassign_owner(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    user_id: str,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.unassign(user_id, principal.user_id, now),
        lambda o, p: access.require_assignment(o, p, user_id),
    )


async def claim_opportunity(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.claim(principal, now),
        access.require_claim,
    )


async def assign_team(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    team_id: str,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.assign_team(team_id, principal.user_id, now),
        access.require_team_assignment,
    )


async def add_note(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    reason: NoteReason,
    text: str,
) -> tuple[Opportunity, Note]:
    added: list[Note] = []
    opportunity = await _change(
        uow,
        opportunity_id,
        principal,
        None,
        lambda o, now: added.append(o.add_note(reason, text, principal.user_id, now)),
    )
    # A change refused at its write runs again: the note stored is the last one made.
    return opportunity, added[-1]


async def share_opportunity(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    share: Share,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.share(share, principal.user_id, now),
    )


async def unshare_opportunity(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    kind: str,
    holder: str,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.unshare(kind, holder, principal.user_id, now),
    )


async def add_record(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    kind: RecordKind,
    record: DealRecord,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.add_record(kind, record, principal.user_id, now),
    )


async def change_record(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    kind: RecordKind,
    record_id: UUID,
    changes: Mapping[str, object],
) -> Opportunity:
    """Set the given members of one record; the result is checked as a new one is."""

    def apply(o: Opportunity, now: datetime) -> None:
        current = o.record(kind, record_id)
        changed = type(current).model_validate({**current.model_dump(), **changes})
        o.replace_record(kind, changed, principal.user_id, now)

    return await _change(uow, opportunity_id, principal, expected_version, apply)


async def remove_record(
    uow: OpportunityUnitOfWork,
    opportunity_id: UUID,
    principal: Principal,
    expected_version: int | None,
    kind: RecordKind,
    record_id: UUID,
) -> Opportunity:
    return await _change(
        uow,
        opportunity_id,
        principal,
        expected_version,
        lambda o, now: o.remove_record(kind, record_id, principal.user_id, now),
    )
