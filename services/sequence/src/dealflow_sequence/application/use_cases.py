"""The sequence service's use cases, one transaction each: load, authorize, apply, save.

A record of a deal the caller may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.sequence import TaskKind
from dealflow_sequence.application.unit_of_work import SequenceUnitOfWork
from dealflow_sequence.domain import access
from dealflow_sequence.domain.deal import KnownDeal
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.enrollment import Enrollment
from dealflow_sequence.domain.errors import (
    AlreadyEnrolled,
    DealClosed,
    EnrollmentNotFound,
    OpportunityNotFound,
    SequenceRetired,
    TaskNotFound,
)
from dealflow_sequence.domain.tasks import Task, TaskNote

UnitOfWorkFactory = Callable[[], SequenceUnitOfWork]


async def define_sequence(
    unit_of_work: UnitOfWorkFactory,
    caller: Principal,
    *,
    name: str,
    trigger: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    exit_conditions: Sequence[str] | None,
) -> SequenceDefinition:
    access.require_sequence_author(caller)
    async with unit_of_work() as uow:
        definition = SequenceDefinition.define(
            name=name,
            trigger=trigger,
            steps=steps,
            exit_conditions=exit_conditions,
            by=caller.user_id,
            now=uow.clock(),
        )
        await uow.sequences.add(definition)
        await uow.commit()
    return definition


async def revise_sequence(
    unit_of_work: UnitOfWorkFactory,
    caller: Principal,
    sequence_id: UUID,
    *,
    name: str,
    trigger: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    exit_conditions: Sequence[str] | None,
    expected_version: int | None = None,
) -> SequenceDefinition:
    access.require_sequence_author(caller)
    async with unit_of_work() as uow:
        current = await uow.sequences.get(sequence_id, lock=True)
        loaded = expected_version if expected_version is not None else current.version
        revised = current.revise(
            name=name,
            trigger=trigger,
            steps=steps,
            exit_conditions=exit_conditions,
            now=uow.clock(),
        )
        await uow.sequences.save(revised, loaded)
        await uow.commit()
    return revised


async def retire_sequence(
    unit_of_work: UnitOfWorkFactory, caller: Principal, sequence_id: UUID
) -> SequenceDefinition:
    access.require_sequence_author(caller)
    async with unit_of_work() as uow:
        current = await uow.sequences.get(sequence_id, lock=True)
        retired = current.retire(uow.clock())
        await uow.sequences.save(retired, current.version)
        await uow.commit()
    return retired


async def _visible_deal(
    uow: SequenceUnitOfWork, opportunity_id: UUID, caller: Principal, *, lock: bool = False
) -> KnownDeal:
    deal = await uow.deals.get(opportunity_id, lock=lock)
    if deal is None:
        raise OpportunityNotFound(opportunity_id)
    if not access.can_view(deal, caller):
        raise OpportunityNotFound(opportunity_id).unseen()
    return deal


async def enroll_by_hand(
    unit_of_work: UnitOfWorkFactory, caller: Principal, opportunity_id: UUID, sequence_id: UUID
) -> Enrollment:
    async with unit_of_work() as uow:
        # The deal's row is locked, so a trigger applied meanwhile waits and sees this one.
        deal = await _visible_deal(uow, opportunity_id, caller, lock=True)
        access.require_enrollment_work(caller)
        access.require_deal_work(deal, caller)
        if not deal.is_open:
            raise DealClosed(opportunity_id, deal.stage.value)
        definition = await uow.sequences.get(sequence_id)
        if definition.is_retired:
            raise SequenceRetired(sequence_id, "take new enrollments")
        for live in await uow.enrollments.live_of(opportunity_id):
            if live.sequence_id == sequence_id:
                raise AlreadyEnrolled(opportunity_id, sequence_id, live.id)
        enrollment = Enrollment.start(
            definition, opportunity_id, by=caller.user_id, now=uow.clock()
        )
        await uow.enrollments.add(enrollment)
        uow.collect(enrollment)
        await uow.commit()
    return enrollment


async def change_enrollment(
    unit_of_work: UnitOfWorkFactory, caller: Principal, enrollment_id: UUID, action: str
) -> Enrollment:
    """Pause, resume or cancel by hand."""
    async with unit_of_work() as uow:
        enrollment = await uow.enrollments.get(enrollment_id)
        deal = await uow.deals.get(enrollment.opportunity_id)
        if deal is None:
            raise EnrollmentNotFound(enrollment_id)
        if not access.can_view(deal, caller):
            raise EnrollmentNotFound(enrollment_id).unseen()
        access.require_enrollment_work(caller)
        access.require_deal_work(deal, caller)
        now = uow.clock()
        if action == "pause":
            enrollment.pause(caller.user_id, now)
        elif action == "resume":
            enrollment.resume(caller.user_id, now)
        else:
            enrollment.cancel(f"cancelled by {caller.user_id}", caller.user_id, now)
        await uow.enrollments.save(enrollment)
        uow.collect(enrollment)
        await uow.commit()
    return enrollment


async def create_task(
    unit_of_work: UnitOfWorkFactory,
    caller: Principal,
    *,
    opportunity_id: UUID,
    title: str,
    due_at: datetime,
    assignee: str | None,
    kind: TaskKind,
) -> Task:
    async with unit_of_work() as uow:
        deal = await _visible_deal(uow, opportunity_id, caller, lock=True)
        access.require_task_work(caller)
        access.require_deal_work(deal, caller)
        now = uow.clock()
        task = Task.create(
            opportunity_id=opportunity_id,
            title=title,
            kind=kind,
            assignee=assignee or caller.user_id,
            due_at=due_at,
            by=caller.user_id,
            now=now,
        )
        await uow.tasks.add(task)
        uow.collect(task)
        await _touch(uow, deal, now)
        await uow.commit()
    return task


async def _task_of_visible_deal(
    uow: SequenceUnitOfWork, task_id: UUID, caller: Principal
) -> tuple[Task, KnownDeal]:
    task = await uow.tasks.get(task_id)
    deal = await uow.deals.get(task.opportunity_id, lock=True)
    if deal is None:
        raise TaskNotFound(task_id)
    if not access.can_view(deal, caller):
        raise TaskNotFound(task_id).unseen()
    access.require_task_work(caller)
    access.require_deal_work(deal, caller)
    return task, deal


async def _touch(uow: SequenceUnitOfWork, deal: KnownDeal, now: datetime) -> None:
    """Work on a task is activity on its deal (the stale rule counts it)."""
    deal.touch(now)
    await uow.deals.save(deal, now)


async def complete_task(unit_of_work: UnitOfWorkFactory, caller: Principal, task_id: UUID) -> Task:
    async with unit_of_work() as uow:
        task, deal = await _task_of_visible_deal(uow, task_id, caller)
        now = uow.clock()
        task.complete(caller.user_id, now)
        await uow.tasks.save(task)
        uow.collect(task)
        await _touch(uow, deal, now)
        await uow.commit()
    return task


async def add_task_note(
    unit_of_work: UnitOfWorkFactory, caller: Principal, task_id: UUID, text: str
) -> TaskNote:
    async with unit_of_work() as uow:
        task, deal = await _task_of_visible_deal(uow, task_id, caller)
        now = uow.clock()
        note = task.add_note(text, caller.user_id, now)
        await uow.tasks.add_note(note)
        await _touch(uow, deal, now)
        await uow.commit()
    return note
