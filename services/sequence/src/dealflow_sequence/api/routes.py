"""Sequence, enrollment, task and stale-deal endpoints: thin adapters to the use cases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response

from dealflow_common.http.paging import etag, expected_version
from dealflow_common.http.problems import CHANGES, READS
from dealflow_common.http.security import Caller
from dealflow_sequence.api.schemas import (
    EnrollmentResponse,
    EnrollRequest,
    NoteRequest,
    NoteResponse,
    SequenceRequest,
    SequenceResponse,
    StaleDealResponse,
    StepHistory,
    StepState,
    TaskRequest,
    TaskResponse,
)
from dealflow_sequence.application import use_cases
from dealflow_sequence.application.queries import FollowUp, SequenceReader
from dealflow_sequence.application.use_cases import UnitOfWorkFactory
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.enrollment import EnrollmentState
from dealflow_sequence.domain.tasks import Task, TaskFilter

Clock = Callable[[], datetime]


def sequence_response(definition: SequenceDefinition) -> SequenceResponse:
    document = definition.document()
    return SequenceResponse(
        id=definition.id,
        version=definition.version,
        name=definition.name,
        trigger=document["trigger"],
        steps=document["steps"],
        exit_conditions=document["exit_conditions"],
        retired=definition.is_retired,
        retired_at=definition.retired_at,
        created_by=definition.created_by,
        created_at=definition.created_at,
        updated_at=definition.updated_at,
    )


def enrollment_response(follow_up: FollowUp) -> EnrollmentResponse:
    enrollment, definition = follow_up.enrollment, follow_up.definition
    ran = {run.step_no: run for run in follow_up.runs}
    history = []
    estimate = enrollment.next_due_at
    for number, step in enumerate(definition.steps, start=1):
        run = ran.get(number)
        if run is not None:
            history.append(
                StepHistory(
                    step_no=number,
                    action=step.action.value,
                    after=step.after.text,
                    state="done" if run.result == "done" else "failed",
                    due_at=run.due_at,
                    executed_at=run.executed_at,
                    result=run.result,
                    detail=run.detail,
                    task_id=run.task_id,
                )
            )
            continue
        state: StepState
        if not enrollment.is_live or enrollment.next_step is None:
            state, due = "skipped", None
        elif number == enrollment.next_step:
            paused = enrollment.state == EnrollmentState.PAUSED
            state, due = ("waiting", None) if paused else ("scheduled", enrollment.next_due_at)
        else:
            if estimate is not None:
                estimate = estimate + step.after.length
            state, due = "planned", estimate
        history.append(
            StepHistory(
                step_no=number,
                action=step.action.value,
                after=step.after.text,
                state=state,
                due_at=due,
            )
        )
    return EnrollmentResponse(
        id=enrollment.id,
        opportunity_id=enrollment.opportunity_id,
        sequence_id=enrollment.sequence_id,
        sequence_version=enrollment.sequence_version,
        sequence_name=enrollment.sequence_name,
        state=enrollment.state.value,
        allowed_actions=enrollment.allowed_actions(),
        enrolled_by=enrollment.enrolled_by,
        enrolled_at=enrollment.enrolled_at,
        next_step=enrollment.next_step,
        next_due_at=enrollment.next_due_at,
        ended_at=enrollment.ended_at,
        end_reason=enrollment.end_reason,
        steps=history,
        version=enrollment.version,
    )


def task_response(task: Task, now: datetime) -> TaskResponse:
    return TaskResponse(
        id=task.id,
        opportunity_id=task.opportunity_id,
        enrollment_id=task.enrollment_id,
        kind=task.kind,
        title=task.title,
        assignee=task.assignee,
        due_at=task.due_at,
        state=task.state.value,
        overdue=task.is_overdue(now),
        allowed_actions=task.allowed_actions(),
        created_by=task.created_by,
        created_at=task.created_at,
        completed_by=task.completed_by,
        completed_at=task.completed_at,
        notes=[
            NoteResponse(id=n.id, text=n.text, author=n.author, added_at=n.added_at)
            for n in task.notes
        ],
        version=task.version,
    )


def sequence_routes(unit_of_work: UnitOfWorkFactory, reader: SequenceReader) -> APIRouter:
    router = APIRouter(prefix="/sequences", tags=["sequences"])

    @router.post("", status_code=201, responses=CHANGES, summary="Define a sequence")
    async def create(body: SequenceRequest, caller: Caller, response: Response) -> SequenceResponse:
        definition = await use_cases.define_sequence(
            unit_of_work,
            caller,
            name=body.name,
            trigger=body.trigger.model_dump(),
            steps=[step.model_dump() for step in body.steps],
            exit_conditions=body.exit_conditions,
        )
        response.headers["Location"] = f"/sequences/{definition.id}"
        response.headers["ETag"] = etag(definition.version)
        return sequence_response(definition)

    @router.get("", responses=READS, summary="The sequences, oldest first")
    async def listed(caller: Caller, include_retired: bool = False) -> list[SequenceResponse]:
        return [sequence_response(d) for d in await reader.sequences(include_retired)]

    @router.get("/{sequence_id}", responses=READS, summary="A sequence's current version")
    async def get(sequence_id: UUID, caller: Caller, response: Response) -> SequenceResponse:
        definition = await reader.sequence(sequence_id)
        response.headers["ETag"] = etag(definition.version)
        return sequence_response(definition)

    @router.put(
        "/{sequence_id}",
        responses=CHANGES,
        summary="Update a sequence: a new version for new enrollments; running ones keep theirs",
    )
    async def update(
        sequence_id: UUID,
        body: SequenceRequest,
        caller: Caller,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
    ) -> SequenceResponse:
        definition = await use_cases.revise_sequence(
            unit_of_work,
            caller,
            sequence_id,
            expected_version=expected_version(if_match),
            name=body.name,
            trigger=body.trigger.model_dump(),
            steps=[step.model_dump() for step in body.steps],
            exit_conditions=body.exit_conditions,
        )
        response.headers["ETag"] = etag(definition.version)
        return sequence_response(definition)

    @router.post(
        "/{sequence_id}/retire",
        responses=CHANGES,
        summary="Retire a sequence: no new enrollments; running ones go on",
    )
    async def retire(sequence_id: UUID, caller: Caller) -> SequenceResponse:
        return sequence_response(await use_cases.retire_sequence(unit_of_work, caller, sequence_id))

    return router


def enrollment_routes(unit_of_work: UnitOfWorkFactory, reader: SequenceReader) -> APIRouter:
    router = APIRouter(tags=["enrollments"])

    @router.post(
        "/opportunities/{opportunity_id}/enrollments",
        status_code=201,
        responses=CHANGES,
        summary="Enroll a deal in a sequence by hand",
    )
    async def enroll(
        opportunity_id: UUID, body: EnrollRequest, caller: Caller, response: Response
    ) -> EnrollmentResponse:
        enrollment = await use_cases.enroll_by_hand(
            unit_of_work, caller, opportunity_id, body.sequence_id
        )
        response.headers["Location"] = f"/opportunities/{opportunity_id}/enrollments"
        return enrollment_response(await reader.follow_up(enrollment))

    @router.get(
        "/opportunities/{opportunity_id}/enrollments",
        responses=READS,
        summary="The deal's follow-up history: each enrollment and its steps",
    )
    async def history(opportunity_id: UUID, caller: Caller) -> list[EnrollmentResponse]:
        return [enrollment_response(f) for f in await reader.follow_ups(opportunity_id, caller)]

    for action in ("pause", "resume", "cancel"):
        router.add_api_route(
            f"/enrollments/{{enrollment_id}}/{action}",
            _change(unit_of_work, reader, action),
            methods=["POST"],
            responses=CHANGES,
            summary=f"{action.capitalize()} an enrollment by hand",
            name=f"{action}_enrollment",
        )
    return router


def _change(
    unit_of_work: UnitOfWorkFactory, reader: SequenceReader, action: str
) -> Callable[..., Awaitable[EnrollmentResponse]]:
    async def change(enrollment_id: UUID, caller: Caller) -> EnrollmentResponse:
        enrollment = await use_cases.change_enrollment(unit_of_work, caller, enrollment_id, action)
        return enrollment_response(await reader.follow_up(enrollment))

    return change


def task_routes(unit_of_work: UnitOfWorkFactory, reader: SequenceReader, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    @router.get("/tasks", responses=READS, summary="Tasks by deal, assignee and state")
    async def listed(
        caller: Caller,
        opportunity_id: UUID | None = None,
        assignee: str | None = None,
        state: TaskFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> list[TaskResponse]:
        now = clock()
        found = await reader.tasks(
            caller,
            opportunity_id=opportunity_id,
            assignee=assignee,
            state=state,
            now=now,
            limit=limit,
        )
        return [task_response(t, now) for t in found]

    @router.post("/tasks", status_code=201, responses=CHANGES, summary="A manual task")
    async def create(body: TaskRequest, caller: Caller, response: Response) -> TaskResponse:
        task = await use_cases.create_task(
            unit_of_work,
            caller,
            opportunity_id=body.opportunity_id,
            title=body.title,
            due_at=body.due_at,
            assignee=body.assignee,
            kind=body.kind,
        )
        response.headers["Location"] = f"/tasks/{task.id}"
        return task_response(task, clock())

    @router.get("/tasks/{task_id}", responses=READS, summary="One task with its notes")
    async def get(task_id: UUID, caller: Caller) -> TaskResponse:
        return task_response(await reader.task(task_id, caller), clock())

    @router.post("/tasks/{task_id}/complete", responses=CHANGES, summary="Complete a task")
    async def complete(task_id: UUID, caller: Caller) -> TaskResponse:
        await use_cases.complete_task(unit_of_work, caller, task_id)
        return task_response(await reader.task(task_id, caller), clock())

    @router.post(
        "/tasks/{task_id}/notes", status_code=201, responses=CHANGES, summary="Note on a task"
    )
    async def note(task_id: UUID, body: NoteRequest, caller: Caller) -> NoteResponse:
        added = await use_cases.add_task_note(unit_of_work, caller, task_id, body.text)
        return NoteResponse(
            id=added.id, text=added.text, author=added.author, added_at=added.added_at
        )

    @router.get(
        "/stale",
        responses=READS,
        summary="Open deals reported quiet (no activity since) or past their close date",
    )
    async def stale(caller: Caller) -> list[StaleDealResponse]:
        found = await reader.stale(caller, clock().date())
        today = clock().date()
        return [
            StaleDealResponse(
                opportunity_id=d.id,
                reasons=d.stale_now(today),
                title=d.title,
                stage=d.stage.value,
                owners=d.owners,
                team_id=d.team_id,
                last_activity_at=d.last_activity_at,
                expected_close_date=d.expected_close_date,
            )
            for d in found
        ]

    return router
