"""The deal's next action from its follow-ups: `dealflow.sequence.events`.

The sequence service owns the tasks and the sequences; this service keeps only what
it needs for the next action: each task's title, due time and whether it is done
(`deal_tasks`, every field forward only), and the last `next_action` step applied.
Which value then wins (by hand, a step, the earliest open task) is the domain's rule
(`domain.next_action`); a change is published as `opportunity.updated` with
`changed_fields: ["next_action"]` and `updated_by: "system:sequence"`.

Events of a deal this service does not hold (purged since) change nothing. Other types
on the topic (enrollments, emails, stale alerts) are not handled here.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from dealflow_common.contracts.opportunity import NextAction
from dealflow_common.contracts.sequence import (
    SequenceStepExecuted,
    StepAction,
    TaskCompleted,
    TaskCreated,
)
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain.errors import OpportunityNotFound
from dealflow_opportunity.domain.model import Opportunity
from dealflow_opportunity.domain.next_action import NOTE_LENGTH

log = logging.getLogger(__name__)


async def _locked_deal(uow: OpportunityUnitOfWork, opportunity_id: UUID) -> Opportunity | None:
    try:
        return await uow.opportunities.get(opportunity_id)
    except OpportunityNotFound:
        log.info("follow-up event of opportunity %s, which is not here (purged)", opportunity_id)
        return None


async def _learn_task(
    uow: OpportunityUnitOfWork,
    event: IncomingEvent[Any],
    opportunity_id: UUID,
    task_id: UUID,
    facts: dict[str, Any],
) -> None:
    deal = await _locked_deal(uow, opportunity_id)
    if deal is None:
        return
    await uow.tasks.learn(
        task_id,
        deal.id,
        facts,
        source=event.envelope.source,
        sequence=event.envelope.sequence,
    )
    deal.follow_tasks(await uow.tasks.earliest_open(deal.id), uow.clock())
    await uow.opportunities.save(deal)
    uow.collect(deal)


async def task_created(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    created: TaskCreated = event.payload
    facts = {"title": created.title, "due_at": created.due_at}
    await _learn_task(uow, event, created.opportunity_id, created.task_id, facts)


async def task_completed(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    completed: TaskCompleted = event.payload
    facts = {"done_at": completed.completed_at}
    await _learn_task(uow, event, completed.opportunity_id, completed.task_id, facts)


async def step_executed(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    """Only a `next_action` step that ran sets anything; other steps tell their effect
    through their own events (a task step's `task.created`)."""
    step: SequenceStepExecuted = event.payload
    if step.action != StepAction.NEXT_ACTION or step.result != "done" or not step.next_action:
        return
    deal = await _locked_deal(uow, step.opportunity_id)
    if deal is None:
        return
    note = step.next_action.note
    planned = NextAction(date=step.next_action.date, note=note[:NOTE_LENGTH] if note else None)
    deal.plan_next_action(
        planned, uow.clock(), source=event.envelope.source, sequence=event.envelope.sequence
    )
    await uow.opportunities.save(deal)
    uow.collect(deal)


HANDLERS: dict[str, EventHandler] = {
    "task.created": task_created,
    "task.completed": task_completed,
    "sequence.step_executed": step_executed,
}
